"""Fixtures for the daemon's tests: queues on the real moto server (and, where real SQS's receipt
semantics matter, on the lean SQS), the fake Lambda, factories."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from daemon_helpers import FUNCTION, Queues
from fake_lambda import FakeLambda

from bench.lean_sqs import LeanSQSProcess
from openstack_handler.daemon.consumer import InputConsumer
from openstack_handler.daemon.drainer import OutputDrainer
from openstack_handler.daemon.invoker import LambdaInvoker, lambda_client_config
from openstack_handler.daemon.results_store import ResultsStore
from openstack_handler.daemon.state import StateDB


@pytest.fixture()
def state(tmp_path: Path) -> Iterator[StateDB]:
    with StateDB(tmp_path / "state" / "state.sqlite3") as db:
        yield db


@pytest.fixture()
def store(tmp_path: Path) -> ResultsStore:
    return ResultsStore(tmp_path / "results")


@pytest.fixture()
def make_consumer(boto_session: boto3.session.Session, queues: Queues, state: StateDB,
                  store: ResultsStore, fake_lambda: FakeLambda) -> Callable[..., InputConsumer]:
    """Factory: an InputConsumer on the moto input queue invoking the fake Lambda, fast settings."""

    def factory(**overrides: Any) -> InputConsumer:
        client = boto_session.client("lambda", config=lambda_client_config(
            function_timeout_s=10, concurrency=overrides.get("concurrency", 4)))
        invoker = LambdaInvoker(client=client, function_name=FUNCTION, max_attempts=4,
                                backoff_initial_s=0.05, backoff_max_s=0.2)
        kwargs: dict[str, Any] = {
            "sqs": boto_session.client("sqs"), "queue_url": queues.input, "invoker": invoker,
            "state": state, "store": store, "concurrency": 4, "wait_time_s": 1,
            "visibility_timeout_s": 30}
        kwargs.update(overrides)
        return InputConsumer(**kwargs)

    return factory


@pytest.fixture()
def make_drainer(boto_session: boto3.session.Session, queues: Queues, state: StateDB,
                 store: ResultsStore) -> Callable[..., OutputDrainer]:
    def factory(**overrides: Any) -> OutputDrainer:
        kwargs: dict[str, Any] = {
            "sqs": boto_session.client("sqs"), "queue_url": queues.output, "store": store,
            "state": state, "wait_time_s": 1}
        kwargs.update(overrides)
        return OutputDrainer(**kwargs)

    return factory


@pytest.fixture(scope="session")
def lean_sqs_server() -> Iterator[LeanSQSProcess]:
    """bench/lean_sqs.py over HTTP: its receipt handles behave as real SQS's do (only the newest
    one deletes or changes visibility), where moto accepts any receipt a message ever had."""
    with LeanSQSProcess() as server:
        yield server


@pytest.fixture()
def lean_queue(lean_sqs_server: LeanSQSProcess, aws_env: str) -> Iterator[tuple[Any, str]]:
    """(an SQS client on the lean SQS, the URL of a fresh queue there)."""
    client = boto3.client("sqs", endpoint_url=lean_sqs_server.url, region_name="us-east-1")
    url = client.create_queue(QueueName=f"input-{uuid.uuid4().hex[:12]}")["QueueUrl"]
    yield client, url
    client.purge_queue(QueueUrl=url)
