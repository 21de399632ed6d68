"""Helpers of the Lambda service's tests: its process for a spec, boto3 clients without retries."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config

from lambda_service.endpoint import LambdaEndpoint
from lambda_service.spec import EndpointSpec

REPO = Path(__file__).resolve().parents[2]
CREDENTIALS = {"region_name": "us-east-1", "aws_access_key_id": "testing",
               "aws_secret_access_key": "testing"}


def lambda_client(url: str, **config: Any) -> Any:
    """No SDK retries: a retried invoke would run the function twice (and hide 429s)."""
    return boto3.client("lambda", endpoint_url=url, **CREDENTIALS,
                        config=Config(retries={"max_attempts": 0}, **config))


@contextmanager
def serve(spec: EndpointSpec, tmp_path_factory: pytest.TempPathFactory,
          name: str) -> Iterator[LambdaEndpoint]:
    """The service for *spec* as a process, importing the handlers of this repository."""
    log = tmp_path_factory.mktemp(name) / "endpoint.log"
    with LambdaEndpoint(spec, log_path=log, pythonpath=[REPO], cwd=REPO) as server:
        yield server
