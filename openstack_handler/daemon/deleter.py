"""Input-message deletes in batches, off the invocation slots (and the other SQS batch helpers).

Deleting is the last step of a message whose effect is already durable (the function succeeded,
the state DB says so), so it need not hold an invocation slot, nor cost a round trip of its own:
receipts are queued here and a thread sends them with ``DeleteMessageBatch`` — as soon as 10 are
waiting, or when the oldest has waited ``max_delay_s``. Under load that is one request per ten
messages instead of ten, and the slot is free for the next video a round trip sooner.

A delete that fails (SQS down, a stale receipt) is logged and dropped: the message comes back
after its visibility timeout and is acknowledged as a duplicate, exactly as with a direct delete.
``stop()`` flushes whatever is queued. Without a running thread (tests driving ``poll_once``),
``add`` deletes at once.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import structlog
from botocore.exceptions import BotoCoreError, ClientError

log = structlog.get_logger(__name__)

SQS_MAX_BATCH = 10


def chunks(items: Sequence[Any], size: int = SQS_MAX_BATCH) -> Iterable[Sequence[Any]]:
    """*items* in runs of at most *size* (SQS batch calls take 10 entries)."""
    for start in range(0, len(items), size):
        yield items[start:start + size]


def delete_batch(sqs: Any, queue_url: str, receipts: Sequence[str], *, event: str,
                 note: str) -> int:
    """DeleteMessageBatch for *receipts* (any number); returns how many SQS deleted.

    Failures — the call, or single entries — are logged as *event* with *note* (what happens
    to the message next) and not raised: an undeleted message comes back and is handled again.
    """
    deleted = 0
    for chunk in chunks(list(receipts)):
        try:
            response = sqs.delete_message_batch(QueueUrl=queue_url, Entries=[
                {"Id": str(i), "ReceiptHandle": r} for i, r in enumerate(chunk)])
        except (ClientError, BotoCoreError) as exc:
            log.warning(event, count=len(chunk), error=str(exc), note=note)
            continue
        deleted += len(response.get("Successful", []))
        for failure in response.get("Failed", []):
            log.warning(event, code=failure.get("Code"), detail=failure.get("Message"), note=note)
    return deleted


def change_visibility(sqs: Any, queue_url: str, receipts: Sequence[str], timeout_s: int) -> int:
    """ChangeMessageVisibilityBatch for *receipts*; returns how many SQS accepted."""
    ok = 0
    for chunk in chunks(list(receipts)):
        entries = [{"Id": str(i), "ReceiptHandle": rh, "VisibilityTimeout": timeout_s}
                   for i, rh in enumerate(chunk)]
        response = sqs.change_message_visibility_batch(QueueUrl=queue_url, Entries=entries)
        ok += len(response.get("Successful", []))
        for failure in response.get("Failed", []):
            log.warning("sqs.visibility_change_failed", code=failure.get("Code"),
                        detail=failure.get("Message"), timeout_s=timeout_s)
    return ok


class BatchDeleter:
    """Queue receipts with :meth:`add`; they are deleted within ``max_delay_s``."""

    def __init__(self, *, sqs: Any, queue_url: str, max_delay_s: float = 0.05,
                 on_deleted: Callable[[int], None] = lambda count: None) -> None:
        self.sqs = sqs
        self.queue_url = queue_url
        self.max_delay_s = max_delay_s
        self.on_deleted = on_deleted
        self._cond = threading.Condition()
        self._pending: list[tuple[float, str]] = []  # (queued at, receipt handle)
        self._thread: threading.Thread | None = None
        self._stopping = False

    def start(self) -> None:
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="input-deleter", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 30.0) -> None:
        """Flush what is queued, then end the thread."""
        thread = self._thread
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if thread is not None:
            thread.join(timeout_s)
        self._thread = None
        self._flush_all()  # anything added after the thread's last look

    def add(self, receipt: str) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._delete([receipt])
            return
        with self._cond:
            self._pending.append((time.monotonic(), receipt))
            if len(self._pending) in (1, SQS_MAX_BATCH):  # a new deadline, or a full batch
                self._cond.notify_all()

    @property
    def pending(self) -> int:
        with self._cond:
            return len(self._pending)

    def _run(self) -> None:
        while True:
            with self._cond:
                if not self._due_or_stopping():
                    self._cond.wait(timeout=self._wait_s())  # woken by add(), stop() or the clock
                if self._stopping and not self._pending:
                    return
                if not self._due_or_stopping():
                    continue
                batch = [receipt for _, receipt in self._pending[:SQS_MAX_BATCH]]
                del self._pending[:SQS_MAX_BATCH]
            try:
                self._delete(batch)
            except Exception:  # the thread's outermost boundary: a bug must not stop deletes
                log.exception("input.deleter_crashed", count=len(batch))

    def _due_or_stopping(self) -> bool:
        if not self._pending:
            return self._stopping
        return (self._stopping or len(self._pending) >= SQS_MAX_BATCH
                or time.monotonic() - self._pending[0][0] >= self.max_delay_s)

    def _wait_s(self) -> float | None:
        if not self._pending:
            return None
        return max(0.0, self._pending[0][0] + self.max_delay_s - time.monotonic())

    def _flush_all(self) -> None:
        with self._cond:
            receipts = [receipt for _, receipt in self._pending]
            self._pending.clear()
        self._delete(receipts)

    def _delete(self, receipts: Sequence[str]) -> None:
        deleted = delete_batch(self.sqs, self.queue_url, receipts, event="input.delete_failed",
                               note="a redelivery is acknowledged as a duplicate")
        if deleted:
            self.on_deleted(deleted)
