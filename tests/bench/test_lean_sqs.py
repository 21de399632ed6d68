"""The lean benchmark SQS (bench/lean_sqs.py) keeps the SQS semantics the daemon relies on.

Driven over HTTP with boto3, the same client the daemon uses, so the wire protocol is checked too.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from polling import wait_for

from bench.lean_sqs import LeanSQSProcess
from openstack_handler.daemon.handler import _MISSING_QUEUE_CODES

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


@pytest.fixture(scope="module")
def lean() -> Iterator[LeanSQSProcess]:
    with LeanSQSProcess() as server:
        yield server


@pytest.fixture()
def sqs(lean: LeanSQSProcess) -> Any:
    return boto3.session.Session().client(
        "sqs", endpoint_url=lean.url, region_name="us-east-1", aws_access_key_id="testing",
        aws_secret_access_key="testing")


@pytest.fixture()
def queue(sqs: Any, request: pytest.FixtureRequest) -> str:
    return str(sqs.create_queue(QueueName=request.node.name[:60],
                                Attributes={"VisibilityTimeout": "30"})["QueueUrl"])


def _receive(sqs: Any, url: str, **kwargs: Any) -> list[dict[str, Any]]:
    kwargs.setdefault("MessageSystemAttributeNames", ["ApproximateReceiveCount"])
    return list(sqs.receive_message(QueueUrl=url, **kwargs).get("Messages", []))


def _receive_until(sqs: Any, url: str, count: int) -> list[dict[str, Any]]:
    """Long-poll until *count* messages have come back (they may surface a moment apart)."""
    got: list[dict[str, Any]] = []
    wait_for(lambda: got.extend(_receive(sqs, url, MaxNumberOfMessages=10, WaitTimeSeconds=1))
             or len(got) >= count, timeout_s=15, what=f"{count} messages back")
    return got


def test_receive_hides_messages_and_redelivery_counts_with_a_new_receipt(
        sqs: Any, queue: str) -> None:
    sqs.send_message_batch(QueueUrl=queue, Entries=[
        {"Id": str(i), "MessageBody": f"m{i}"} for i in range(3)])
    first = _receive(sqs, queue, MaxNumberOfMessages=2, VisibilityTimeout=30)
    assert [m["Body"] for m in first] == ["m0", "m1"]
    assert [m["Body"] for m in _receive(sqs, queue, MaxNumberOfMessages=10)] == ["m2"]
    assert _receive(sqs, queue, MaxNumberOfMessages=10) == []  # all in flight
    # WHEN the first two's visibility timeout runs out (cut to 1 s from now)
    sqs.change_message_visibility_batch(QueueUrl=queue, Entries=[
        {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"], "VisibilityTimeout": 1}
        for i, m in enumerate(first)])
    again = _receive_until(sqs, queue, 2)
    assert sorted(m["Body"] for m in again) == ["m0", "m1"]
    assert {m["Attributes"]["ApproximateReceiveCount"] for m in again} == {"2"}
    assert {m["ReceiptHandle"] for m in again}.isdisjoint(m["ReceiptHandle"] for m in first)


def test_only_the_newest_receipt_deletes(sqs: Any, queue: str) -> None:
    sqs.send_message(QueueUrl=queue, MessageBody="once")
    (old,) = _receive(sqs, queue, VisibilityTimeout=0)  # received, and visible again at once
    (new,) = _receive(sqs, queue, VisibilityTimeout=0)
    # an older receipt handle is accepted and deletes nothing, as in SQS
    result = sqs.delete_message_batch(QueueUrl=queue, Entries=[
        {"Id": "old", "ReceiptHandle": old["ReceiptHandle"]}])
    assert [e["Id"] for e in result["Successful"]] == ["old"]
    (still,) = _receive(sqs, queue, VisibilityTimeout=30)
    sqs.delete_message(QueueUrl=queue, ReceiptHandle=still["ReceiptHandle"])
    attrs = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["All"])["Attributes"]
    assert (attrs["ApproximateNumberOfMessages"],
            attrs["ApproximateNumberOfMessagesNotVisible"]) == ("0", "0")
    assert new["MessageId"] == old["MessageId"]


def test_visibility_zero_releases_and_a_long_poll_wakes_on_send(sqs: Any, queue: str) -> None:
    sqs.send_message(QueueUrl=queue, MessageBody="held")
    (held,) = _receive(sqs, queue, VisibilityTimeout=30)
    sqs.change_message_visibility_batch(QueueUrl=queue, Entries=[
        {"Id": "0", "ReceiptHandle": held["ReceiptHandle"], "VisibilityTimeout": 0}])
    (released,) = _receive(sqs, queue)
    assert released["Attributes"]["ApproximateReceiveCount"] == "2"
    # a long poll returns as soon as a message arrives, not when its wait ends
    threading.Timer(0.3, lambda: sqs.send_message(QueueUrl=queue, MessageBody="late")).start()
    started = time.monotonic()
    (late,) = _receive(sqs, queue, WaitTimeSeconds=10)
    assert late["Body"] == "late" and time.monotonic() - started < 3


def test_errors_are_sqs_errors(sqs: Any, lean: LeanSQSProcess, queue: str) -> None:
    with pytest.raises(ClientError) as missing:
        sqs.get_queue_attributes(QueueUrl=lean.queue_url("no-such-queue"),
                                 AttributeNames=["QueueArn"])
    assert missing.value.response["Error"]["Code"] in _MISSING_QUEUE_CODES
    with pytest.raises(ClientError) as too_many:
        sqs.send_message_batch(QueueUrl=queue, Entries=[
            {"Id": str(i), "MessageBody": "x"} for i in range(11)])
    assert "TooManyEntriesInBatchRequest" in str(too_many.value)
    with pytest.raises(ClientError) as unsupported:  # not silently ignored
        sqs.tag_queue(QueueUrl=queue, Tags={"a": "b"})
    assert "not implemented" in str(unsupported.value)
