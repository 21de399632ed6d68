"""Fixtures for the daemon's tests: queues on the real moto server, the fake Lambda, factories."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
from fake_lambda import FakeLambda

from openstack_handler.consumer import InputConsumer
from openstack_handler.drainer import OutputDrainer
from openstack_handler.invoker import LambdaInvoker, lambda_client_config
from openstack_handler.results_store import ResultsStore
from openstack_handler.state import StateDB

FUNCTION = "recognise"


@dataclass
class Queues:
    input: str
    input_dlq: str
    output: str
    output_dlq: str


def _queue_with_dlq(sqs: Any, name: str, max_receive: int = 3) -> tuple[str, str]:
    dlq = sqs.create_queue(QueueName=f"{name}-dlq")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"]
    url = sqs.create_queue(QueueName=name, Attributes={
        "RedrivePolicy": json.dumps({"deadLetterTargetArn": arn,
                                     "maxReceiveCount": str(max_receive)})})["QueueUrl"]
    return url, dlq


@pytest.fixture()
def sqs(boto_session: boto3.session.Session) -> Any:
    return boto_session.client("sqs")


@pytest.fixture()
def queues(sqs: Any) -> Queues:
    inp, inp_dlq = _queue_with_dlq(sqs, "input")
    out, out_dlq = _queue_with_dlq(sqs, "output")
    return Queues(inp, inp_dlq, out, out_dlq)


@pytest.fixture()
def fake_lambda(aws_env: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeLambda]:
    """The FAKE invoke endpoint (see fake_lambda.py); boto3 finds it via AWS_ENDPOINT_URL_LAMBDA."""
    fake = FakeLambda().start()
    monkeypatch.setenv("AWS_ENDPOINT_URL_LAMBDA", fake.url)
    yield fake
    fake.stop()


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


def s3_event(bucket: str, key: str, *, etag: str = "0123abcd", size: int = 1000,
             event_name: str = "ObjectCreated:Put") -> dict[str, Any]:
    """An S3 event notification body as S3/moto sends it (key URL-encoded with '+')."""
    from urllib.parse import quote_plus

    return {"Records": [{
        "eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": "us-east-1",
        "eventName": event_name,
        "s3": {"s3SchemaVersion": "1.0", "configurationId": "videos",
               "bucket": {"name": bucket, "arn": f"arn:aws:s3:::{bucket}"},
               "object": {"key": quote_plus(key, safe="/"), "size": size, "eTag": etag}}}]}


def queue_counts(sqs: Any, url: str) -> tuple[int, int]:
    """(visible, not visible) for *url*."""
    attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=[
        "ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"])["Attributes"]
    return int(attrs["ApproximateNumberOfMessages"]), int(
        attrs["ApproximateNumberOfMessagesNotVisible"])
