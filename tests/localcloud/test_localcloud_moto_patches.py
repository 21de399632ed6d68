"""The local moto server's speed patches (localcloud.moto_main) keep SQS's semantics.

The patches replace moto's per-message time lookups and queue scans with cheaper equivalents; these
tests run the real patched server over HTTP and check what the patched code decides: which
messages are visible, delayed or in flight, what the queue's counters say, and retention.
"""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

from localcloud.moto_main import _valid_by_retention, apply_patches


def _counts(sqs: Any, url: str) -> tuple[int, int, int]:
    attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    return (int(attrs["ApproximateNumberOfMessages"]),
            int(attrs["ApproximateNumberOfMessagesNotVisible"]),
            int(attrs["ApproximateNumberOfMessagesDelayed"]))


def test_every_patch_still_applies_to_this_moto() -> None:
    # A moto upgrade that renames what we patch should fail here, not slow the local cloud down.
    assert set(apply_patches()) == {
        "backends.list_of_moto_modules", "sqs.unix_time", "sqs.unix_time_millis",
        "sqs.Queue.messages", "sqs.Queue.approximate_number_of_messages",
        "sqs.Queue.approximate_number_of_messages_delayed",
        "sqs.Queue.approximate_number_of_messages_not_visible",
        "sqs.is_message_valid_based_on_retention_period"}


def test_visibility_delay_and_counters_on_the_patched_server(sqs: Any) -> None:
    url = sqs.create_queue(QueueName="patched-semantics")["QueueUrl"]
    # GIVEN three ready messages and one delayed by 2 s
    sqs.send_message_batch(QueueUrl=url, Entries=[
        {"Id": str(i), "MessageBody": f"ready-{i}"} for i in range(3)])
    sqs.send_message(QueueUrl=url, MessageBody="later", DelaySeconds=2)
    assert _counts(sqs, url) == (3, 0, 1)

    # WHEN two are received with a 1 s visibility timeout
    got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=2, VisibilityTimeout=1,
                              MessageSystemAttributeNames=["ApproximateReceiveCount"])
    assert len(got["Messages"]) == 2
    # THEN they are in flight, and a receive gets only the third ready message, not the delayed
    assert _counts(sqs, url) == (1, 2, 1)
    rest = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=30)
    assert [m["Body"] for m in rest["Messages"]] == ["ready-2"]

    # WHEN the visibility timeout and the delay have passed
    time.sleep(2.2)
    again = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=30,
                                MessageSystemAttributeNames=["ApproximateReceiveCount"])
    bodies = {m["Body"]: m for m in again["Messages"]}
    # THEN the two come back with a second receive count, and the delayed one is there
    assert set(bodies) == {m["Body"] for m in got["Messages"]} | {"later"}
    assert {bodies[m["Body"]]["Attributes"]["ApproximateReceiveCount"]
            for m in got["Messages"]} == {"2"}
    assert _counts(sqs, url) == (0, 4, 0)

    # AND deletes with the newest receipt handles empty the queue
    sqs.delete_message_batch(QueueUrl=url, Entries=[
        {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
        for i, m in enumerate([*again["Messages"], *rest["Messages"]])])
    assert _counts(sqs, url) == (0, 0, 0)


def test_retention_keeps_fresh_messages_and_drops_expired_ones(sqs: Any) -> None:
    url = sqs.create_queue(QueueName="patched-retention",
                           Attributes={"MessageRetentionPeriod": "60"})["QueueUrl"]
    sqs.send_message(QueueUrl=url, MessageBody="fresh")
    assert [m["Body"] for m in sqs.receive_message(
        QueueUrl=url, VisibilityTimeout=0)["Messages"]] == ["fresh"]
    # The server's clock cannot be moved from here: the expiry side is checked on the function.
    backend = SimpleNamespace(get_queue=lambda name: SimpleNamespace(
        message_retention_period="60"))
    now_ms = time.time() * 1000
    assert _valid_by_retention(backend, "q", SimpleNamespace(sent_timestamp=now_ms - 59_000))
    assert not _valid_by_retention(backend, "q", SimpleNamespace(sent_timestamp=now_ms - 61_000))
