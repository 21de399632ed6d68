"""What the Lambda service's tests share: a boto3 lambda client for a module's `endpoint` (each
module serves its own functions) and an SQS client of the session's moto server."""

from __future__ import annotations

from typing import Any

import boto3
import pytest
from lambda_service_helpers import CREDENTIALS, lambda_client

from lambda_service.endpoint import LambdaEndpoint
from localcloud.moto_server import MotoServer


@pytest.fixture(scope="module")
def lam(endpoint: LambdaEndpoint) -> Any:
    return lambda_client(endpoint.url)


@pytest.fixture(scope="module")
def sqs(moto_server: MotoServer) -> Any:
    return boto3.client("sqs", endpoint_url=moto_server.url, **CREDENTIALS)
