"""SQS event source mappings on the local Lambda endpoint against the real moto server: the
mapping API through boto3's lambda client, and the poller's batching, deletion, partial-failure,
concurrency and disable rules, observed from what the function saw and what is left in SQS."""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from lambda_service_helpers import serve
from polling import wait_for

from lambda_service.endpoint import LambdaEndpoint
from lambda_service.spec import EndpointSpec, FunctionSpec
from localcloud.moto_server import MotoServer

pytestmark = pytest.mark.integration

#: the functions' timeout: a queue's visibility timeout may not be shorter (Lambda checks it)
TIMEOUT_S = 2


@pytest.fixture(scope="module")
def evidence(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("sqs-evidence")


@pytest.fixture(scope="module")
def endpoint(moto_server: MotoServer, evidence: Path,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[LambdaEndpoint]:
    env = {"SQS_EVIDENCE_DIR": str(evidence)}
    spec = EndpointSpec(functions=tuple(
        FunctionSpec(name=name, handler="tests.lambda_service.handlers:sqs_batch", memory_mb=256,
                     concurrency=concurrency, timeout_s=TIMEOUT_S, environment=env)
        for name, concurrency in (("consumer", 3), ("other", 1))),
        aws_endpoint_url=moto_server.url, credentials={"testing": "testing"},
        event_source_poll_wait_s=1)
    with serve(spec, tmp_path_factory, "lambda-esm") as server:
        yield server


class Rig:
    """One test's queue (+DLQ), its mapping, and what the function saw."""

    def __init__(self, lam: Any, sqs: Any, evidence: Path) -> None:
        self.lam, self.sqs, self.evidence = lam, sqs, evidence
        self.tag = uuid.uuid4().hex[:8]
        self.mappings: list[str] = []
        self.queue_url = ""
        self.dlq_url = ""
        self.sent = 0

    def queue(self, *, visibility: int = TIMEOUT_S, max_receive: int = 10) -> str:
        self.dlq_url = self.sqs.create_queue(QueueName=f"dlq-{self.tag}")["QueueUrl"]
        dlq_arn = f"arn:aws:sqs:us-east-1:123456789012:dlq-{self.tag}"
        self.queue_url = self.sqs.create_queue(QueueName=f"q-{self.tag}", Attributes={
            "VisibilityTimeout": str(visibility), "RedrivePolicy": json.dumps(
                {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": max_receive})})["QueueUrl"]
        return f"arn:aws:sqs:us-east-1:123456789012:q-{self.tag}"

    def map(self, arn: str, function: str = "consumer", **kw: Any) -> dict[str, Any]:
        mapping = self.lam.create_event_source_mapping(EventSourceArn=arn, FunctionName=function,
                                                       **kw)
        self.mappings.append(mapping["UUID"])
        return mapping

    def send(self, *bodies: dict[str, Any]) -> list[str]:
        """Send in batches of 10; returns the ids the bodies carry."""
        ids = []
        for start in range(0, len(bodies), 10):
            entries = []
            for i, body in enumerate(bodies[start:start + 10]):
                body = {"id": f"{self.tag}-{self.sent}", **body}
                self.sent += 1
                ids.append(body["id"])
                entries.append({"Id": str(i), "MessageBody": json.dumps(body)})
            self.sqs.send_message_batch(QueueUrl=self.queue_url, Entries=entries)
        return ids

    def seen(self, message_id: str) -> list[dict[str, Any]]:
        path = self.evidence / message_id
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines()]

    def depth(self, url: str | None = None) -> tuple[int, int]:
        attrs = self.sqs.get_queue_attributes(
            QueueUrl=url or self.queue_url, AttributeNames=[
                "ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"])
        return (int(attrs["Attributes"]["ApproximateNumberOfMessages"]),
                int(attrs["Attributes"]["ApproximateNumberOfMessagesNotVisible"]))

    def stats(self, endpoint: LambdaEndpoint, mapping_id: str) -> dict[str, Any]:
        return endpoint.health()["event_source_mappings"][mapping_id]

    def delete_all(self) -> None:
        for mapping_id in self.mappings:
            try:
                self.lam.delete_event_source_mapping(UUID=mapping_id)
            except self.lam.exceptions.ResourceNotFoundException:
                continue
            wait_for(lambda m=mapping_id: self._gone(m), timeout_s=30, what="mapping deleted")

    def _gone(self, mapping_id: str) -> bool:
        try:
            self.lam.get_event_source_mapping(UUID=mapping_id)
        except self.lam.exceptions.ResourceNotFoundException:
            return True
        return False


@pytest.fixture()
def rig(lam: Any, sqs: Any, evidence: Path) -> Iterator[Rig]:
    r = Rig(lam, sqs, evidence)
    yield r
    r.delete_all()


def test_a_batch_of_10_with_one_failure_deletes_9_and_redelivers_1(
        rig: Rig, endpoint: LambdaEndpoint) -> None:
    arn = rig.queue()
    # GIVEN ten messages, the fourth failing on its first delivery, and a mapping that reports
    # batch item failures (window 1 s: the ten land in one batch)
    ids = rig.send(*[{"fail": 1} if i == 3 else {} for i in range(10)])
    mapping = rig.map(arn, BatchSize=10, MaximumBatchingWindowInSeconds=1,
                      FunctionResponseTypes=["ReportBatchItemFailures"])
    # WHEN the poller has run the batch and, after the visibility timeout, the redelivery
    wait_for(lambda: len(rig.seen(ids[3])) == 2, timeout_s=30, what="the redelivery")
    wait_for(lambda: rig.depth() == (0, 0), timeout_s=10, what="an empty queue")
    # THEN the nine were seen once, in one batch of ten, and deleted after it
    for i, message_id in enumerate(ids):
        seen = rig.seen(message_id)
        assert len(seen) == (2 if i == 3 else 1), (i, seen)
        assert seen[0]["batch"] == 10
        assert seen[0]["record"]["attributes"]["ApproximateReceiveCount"] == "1"
    # AND the failed one came back alone, on its second receive, and was then deleted
    again = rig.seen(ids[3])[1]
    assert again["batch"] == 1 and again["record"]["attributes"]["ApproximateReceiveCount"] == "2"
    stats = rig.stats(endpoint, mapping["UUID"])
    assert stats["batch_sizes"] == {"1": 1, "10": 1}
    assert (stats["deleted"], stats["failed_records"]) == (10, 1)
    assert rig.depth(rig.dlq_url) == (0, 0)


def test_without_report_batch_item_failures_the_report_is_ignored(rig: Rig) -> None:
    arn = rig.queue()
    ids = rig.send(*[{"fail": 1} if i == 0 else {} for i in range(4)])
    rig.map(arn, BatchSize=10, MaximumBatchingWindowInSeconds=1)

    wait_for(lambda: all(rig.seen(i) for i in ids), timeout_s=20, what="the batch")
    wait_for(lambda: rig.depth() == (0, 0), timeout_s=10, what="an empty queue")
    time.sleep(TIMEOUT_S + 1)  # past the visibility timeout: nothing comes back
    assert [len(rig.seen(i)) for i in ids] == [1, 1, 1, 1]


def test_a_function_error_leaves_the_whole_batch(rig: Rig, endpoint: LambdaEndpoint) -> None:
    arn = rig.queue()
    # GIVEN three messages in one batch, one of which crashes the function on its first try
    ids = rig.send({}, {"crash": 1}, {})
    mapping = rig.map(arn, BatchSize=3, MaximumBatchingWindowInSeconds=1,
                      FunctionResponseTypes=["ReportBatchItemFailures"])
    # THEN all three come back and are seen twice: the error fails every record of the batch
    wait_for(lambda: all(len(rig.seen(i)) == 2 for i in ids), timeout_s=30,
             what="the whole batch redelivered")
    wait_for(lambda: rig.depth() == (0, 0), timeout_s=10, what="an empty queue")
    assert rig.stats(endpoint, mapping["UUID"])["function_errors"] == 1


def test_an_invalid_report_fails_the_whole_batch(rig: Rig) -> None:
    arn = rig.queue(max_receive=1)
    ids = rig.send({"bad_report": True}, {})
    rig.map(arn, BatchSize=2, MaximumBatchingWindowInSeconds=1,
            FunctionResponseTypes=["ReportBatchItemFailures"])
    # an itemIdentifier naming no message of the batch is a complete failure: both land in
    # the DLQ (maxReceiveCount 1) instead of being deleted
    wait_for(lambda: rig.depth(rig.dlq_url)[0] == 2, timeout_s=30, what="both in the DLQ")
    assert [len(rig.seen(i)) for i in ids] == [1, 1]


def test_batch_size_and_window_are_observed(rig: Rig) -> None:
    arn = rig.queue()
    # GIVEN twelve waiting messages and batches of at most 5
    ids = rig.send(*[{} for _ in range(12)])
    rig.map(arn, BatchSize=5, MaximumBatchingWindowInSeconds=1)
    wait_for(lambda: all(rig.seen(i) for i in ids), timeout_s=20, what="all twelve")
    sizes = sorted(rig.seen(i)[0]["batch"] for i in ids)
    assert max(sizes) == 5 and sum(1 / s for s in sizes) == pytest.approx(3)  # 5 + 5 + 2


def test_the_window_waits_for_more_records_and_zero_does_not(rig: Rig) -> None:
    # visibility past window + function timeout, as AWS advises: with the 2 s default the first
    # record came back while its 2 s window was closing, and was delivered twice
    arn = rig.queue(visibility=4 * TIMEOUT_S + 2)
    rig.map(arn, BatchSize=10, MaximumBatchingWindowInSeconds=2)
    time.sleep(1.5)  # the poller is waiting for a first message
    # WHEN one message arrives, then two more half a second later
    sent = time.time()
    first = rig.send({})
    time.sleep(0.5)
    rest = rig.send({}, {})
    # THEN they make one batch, invoked when the window since the first record closed
    wait_for(lambda: all(rig.seen(i) for i in first + rest), timeout_s=20, what="the batch")
    seen = [rig.seen(i)[0] for i in first + rest]
    assert [s["batch"] for s in seen] == [3, 3, 3]
    assert seen[0]["started"] - sent >= 1.5
    # AND with no window the next message is invoked as soon as it is received
    rig.lam.update_event_source_mapping(UUID=rig.mappings[0], MaximumBatchingWindowInSeconds=0)
    time.sleep(1.5)
    sent = time.time()
    (quick,) = rig.send({})
    wait_for(lambda: rig.seen(quick), timeout_s=10, what="the lone message")
    assert rig.seen(quick)[0]["batch"] == 1 and rig.seen(quick)[0]["started"] - sent < 1.0


def overlap(intervals: list[tuple[float, float]]) -> int:
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    now = peak = 0
    for _, step in events:
        now += step
        peak = max(peak, now)
    return peak


def test_maximum_concurrency_caps_concurrent_batches(rig: Rig, endpoint: LambdaEndpoint) -> None:
    arn = rig.queue()
    # GIVEN a function with 3 workers, a mapping capped at 2 and slow one-record batches
    ids = rig.send(*[{"sleep": 0.4} for _ in range(8)])
    mapping = rig.map(arn, BatchSize=1, ScalingConfig={"MaximumConcurrency": 2})
    assert mapping["ScalingConfig"] == {"MaximumConcurrency": 2}
    wait_for(lambda: all(rig.seen(i) for i in ids), timeout_s=30, what="all eight")
    runs = [(rig.seen(i)[0]["started"], rig.seen(i)[0]["ended"]) for i in ids]
    # THEN never more than two ran at once, and two did
    assert overlap(runs) == 2
    assert rig.stats(endpoint, mapping["UUID"])["max_in_flight"] == 2
    # AND without the cap the function's own concurrency (3) is the limit
    rig.lam.update_event_source_mapping(UUID=mapping["UUID"], ScalingConfig={})
    more = rig.send(*[{"sleep": 0.4} for _ in range(9)])
    wait_for(lambda: all(rig.seen(i) for i in more), timeout_s=30, what="nine more")
    assert overlap([(rig.seen(i)[0]["started"], rig.seen(i)[0]["ended"]) for i in more]) == 3


def test_a_disabled_mapping_stops_polling(rig: Rig, endpoint: LambdaEndpoint) -> None:
    arn = rig.queue()
    mapping = rig.map(arn, BatchSize=1)
    wait_for(lambda: rig.lam.get_event_source_mapping(UUID=mapping["UUID"])["State"]
             == "Enabled", timeout_s=10, what="Enabled")
    # WHEN it is disabled
    updated = rig.lam.update_event_source_mapping(UUID=mapping["UUID"], Enabled=False)
    assert updated["State"] == "Disabling"
    wait_for(lambda: rig.lam.get_event_source_mapping(UUID=mapping["UUID"])["State"]
             == "Disabled", timeout_s=10, what="Disabled")
    polls = rig.stats(endpoint, mapping["UUID"]).get("polls", 0)
    (message,) = rig.send({})
    time.sleep(3)
    # THEN nothing polls the queue: the message waits there, visible, unseen
    assert rig.stats(endpoint, mapping["UUID"]).get("polls", 0) == polls
    assert rig.depth() == (1, 0) and rig.seen(message) == []
    # AND enabling it again picks the message up
    rig.lam.update_event_source_mapping(UUID=mapping["UUID"], Enabled=True)
    wait_for(lambda: rig.seen(message), timeout_s=10, what="the message after enabling")


def test_a_poison_message_reaches_the_dlq_after_max_receive_count(rig: Rig) -> None:
    arn = rig.queue(max_receive=2)
    # GIVEN a message that fails every time, between two that do not
    ids = rig.send({}, {"fail": -1}, {})
    rig.map(arn, BatchSize=10, MaximumBatchingWindowInSeconds=1,
            FunctionResponseTypes=["ReportBatchItemFailures"])
    # THEN after two receives it is in the DLQ and its batch-mates ran once
    wait_for(lambda: rig.depth(rig.dlq_url)[0] == 1, timeout_s=30, what="the poison in the DLQ")
    (dead,) = rig.sqs.receive_message(QueueUrl=rig.dlq_url)["Messages"]
    assert json.loads(dead["Body"])["id"] == ids[1]
    assert [len(rig.seen(i)) for i in ids] == [1, 2, 1]
    assert rig.depth() == (0, 0)


def test_records_have_lambda_s_sqs_shape(rig: Rig) -> None:
    arn = rig.queue()
    rig.map(arn, BatchSize=1)
    body = json.dumps({"id": f"{rig.tag}-shape"})
    sent = rig.sqs.send_message(QueueUrl=rig.queue_url, MessageBody=body, MessageAttributes={
        "camera": {"DataType": "String", "StringValue": "pi-1"},
        "raw": {"DataType": "Binary", "BinaryValue": b"\x00\x01"}})
    wait_for(lambda: rig.seen(f"{rig.tag}-shape"), timeout_s=10, what="the record")
    record = rig.seen(f"{rig.tag}-shape")[0]["record"]

    assert record["messageId"] == sent["MessageId"] and record["receiptHandle"]
    assert record["body"] == body
    assert record["md5OfBody"] == hashlib.md5(body.encode()).hexdigest()
    assert record["eventSource"] == "aws:sqs" and record["eventSourceARN"] == arn
    assert record["awsRegion"] == "us-east-1"
    assert {"ApproximateReceiveCount", "SentTimestamp", "SenderId",
            "ApproximateFirstReceiveTimestamp"} <= set(record["attributes"])
    assert record["messageAttributes"]["camera"] == {
        "stringValue": "pi-1", "stringListValues": [], "binaryListValues": [],
        "dataType": "String"}
    assert record["messageAttributes"]["raw"]["binaryValue"] == "AAE="


def test_the_mapping_api_checks_what_lambda_checks(rig: Rig, lam: Any) -> None:
    arn = rig.queue()
    # the queue's visibility timeout may not be shorter than the function's timeout
    short = rig.sqs.create_queue(QueueName=f"short-{rig.tag}",
                                 Attributes={"VisibilityTimeout": "1"})
    assert short["QueueUrl"]
    with pytest.raises(lam.exceptions.InvalidParameterValueException, match="visibility"):
        rig.map(f"arn:aws:sqs:us-east-1:123456789012:short-{rig.tag}")
    with pytest.raises(lam.exceptions.InvalidParameterValueException):
        rig.map(f"arn:aws:sqs:us-east-1:123456789012:missing-{rig.tag}")
    with pytest.raises(lam.exceptions.InvalidParameterValueException, match="batch window"):
        rig.map(arn, BatchSize=20)
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        rig.map(arn, function="nobody")
    # one mapping per queue and function; listing filters by either
    mapping = rig.map(arn, BatchSize=20, MaximumBatchingWindowInSeconds=1)
    assert mapping["State"] == "Creating" and mapping["BatchSize"] == 20
    assert mapping["FunctionArn"].endswith(":function:consumer")
    with pytest.raises(lam.exceptions.ResourceConflictException):
        rig.map(arn)
    other = rig.map(arn, function="other", Enabled=False)
    assert other["State"] == "Disabled"
    by_queue = lam.list_event_source_mappings(EventSourceArn=arn)["EventSourceMappings"]
    assert {m["UUID"] for m in by_queue} == {mapping["UUID"], other["UUID"]}
    by_function = lam.list_event_source_mappings(EventSourceArn=arn, FunctionName="other")
    assert [m["UUID"] for m in by_function["EventSourceMappings"]] == [other["UUID"]]
    assert lam.get_event_source_mapping(UUID=mapping["UUID"])["State"] == "Enabled"
    # deleting answers Deleting; then it is gone
    assert lam.delete_event_source_mapping(UUID=other["UUID"])["State"] == "Deleting"
    wait_for(lambda: rig._gone(other["UUID"]), timeout_s=10, what="deleted")
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.update_event_source_mapping(UUID=other["UUID"], Enabled=True)
