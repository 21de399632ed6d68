"""BatchDeleter against the session's real moto server: batches of ten, a bounded delay, a flush
on stop, and failures that are logged rather than raised."""

from __future__ import annotations

import time
from typing import Any

from daemon_helpers import queue_counts
from polling import wait_for
from structlog.testing import capture_logs

from openstack_handler.daemon.deleter import BatchDeleter


class CountingSQS:
    """The real client, with its delete calls counted."""

    def __init__(self, sqs: Any) -> None:
        self._sqs = sqs
        self.calls: list[tuple[str, int]] = []

    def delete_message_batch(self, **kwargs: Any) -> Any:
        self.calls.append(("delete_message_batch", len(kwargs["Entries"])))
        return self._sqs.delete_message_batch(**kwargs)


def receive_all(sqs: Any, url: str, count: int) -> list[str]:
    for i in range(0, count, 10):
        sqs.send_message_batch(QueueUrl=url, Entries=[
            {"Id": str(j), "MessageBody": f"m{i + j}"} for j in range(min(10, count - i))])
    receipts: list[str] = []
    while len(receipts) < count:
        got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=60)
        receipts += [m["ReceiptHandle"] for m in got.get("Messages", [])]
    return receipts


def queue_empty(sqs: Any, url: str) -> bool:
    attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    return attrs["ApproximateNumberOfMessages"] == attrs["ApproximateNumberOfMessagesNotVisible"] \
        == "0"


def test_a_burst_is_deleted_ten_at_a_time(sqs: Any, queues: Any) -> None:
    receipts = receive_all(sqs, queues.input, 25)
    counting = CountingSQS(sqs)
    deleted: list[int] = []
    deleter = BatchDeleter(sqs=counting, queue_url=queues.input, max_delay_s=0.2,
                           on_deleted=deleted.append)
    deleter.start()
    for receipt in receipts:
        deleter.add(receipt)
    wait_for(lambda: sum(deleted) == 25, timeout_s=10, what="25 deletes")
    deleter.stop()
    assert counting.calls == [("delete_message_batch", 10), ("delete_message_batch", 10),
                              ("delete_message_batch", 5)]
    assert queue_empty(sqs, queues.input)


def test_a_lone_receipt_waits_at_most_the_delay(sqs: Any, queues: Any) -> None:
    [receipt] = receive_all(sqs, queues.input, 1)
    deleted: list[int] = []
    deleter = BatchDeleter(sqs=sqs, queue_url=queues.input, max_delay_s=0.1,
                           on_deleted=deleted.append)
    deleter.start()
    started = time.monotonic()
    deleter.add(receipt)
    wait_for(lambda: deleted == [1], timeout_s=5, what="the delete")
    assert time.monotonic() - started < 2.0
    deleter.stop()
    assert queue_empty(sqs, queues.input)


def test_stop_flushes_what_is_queued(sqs: Any, queues: Any) -> None:
    receipts = receive_all(sqs, queues.input, 3)
    deleted: list[int] = []
    deleter = BatchDeleter(sqs=sqs, queue_url=queues.input, max_delay_s=60,
                           on_deleted=deleted.append)
    deleter.start()
    for receipt in receipts:
        deleter.add(receipt)
    deleter.stop()
    assert sum(deleted) == 3 and deleter.pending == 0
    assert queue_empty(sqs, queues.input)


def test_without_its_thread_it_deletes_at_once(sqs: Any, queues: Any) -> None:
    [receipt] = receive_all(sqs, queues.input, 1)
    deleted: list[int] = []
    BatchDeleter(sqs=sqs, queue_url=queues.input, on_deleted=deleted.append).add(receipt)
    assert deleted == [1] and queue_empty(sqs, queues.input)


def test_a_failed_delete_is_logged_not_raised(sqs: Any, queues: Any) -> None:
    receipts = receive_all(sqs, queues.input, 3)
    deleted: list[int] = []
    # GIVEN a deleter whose deletes fail (the queue it names does not exist)
    deleter = BatchDeleter(sqs=sqs, queue_url=queues.input + "-missing", max_delay_s=0.01,
                           on_deleted=deleted.append)
    with capture_logs() as logs:
        deleter.start()
        for receipt in receipts[:2]:
            deleter.add(receipt)
        # WHEN the delete has been tried
        failures = wait_for(lambda: [e for e in logs if e["event"] == "input.delete_failed"],
                            timeout_s=10, what="the failed delete logged")
        # THEN it was logged with what happens next, and not raised: the same thread goes on
        # to delete the next receipt once the queue is right
        deleter.queue_url = queues.input
        deleter.add(receipts[2])
        wait_for(lambda: deleted == [1], timeout_s=10, what="the next delete")
        deleter.stop()
    assert all(e["log_level"] == "warning" and "queue does not exist" in e["error"]
               and "duplicate" in e["note"] for e in failures)
    assert sum(e["count"] for e in failures) == 2
    assert not [e for e in logs if e["event"] == "input.deleter_crashed"]
    assert deleter.pending == 0  # dropped: the two come back after their visibility timeout
    assert queue_counts(sqs, queues.input) == (0, 2)
