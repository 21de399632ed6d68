"""``openstack-handler redrive``: move dead letters back to the queue they died on.

Once the cause of a poison message is fixed, its copy in the dead-letter queue is sent back to
the source queue: receive from the DLQ → send to the source (same body and message attributes)
→ delete from the DLQ, deleting only what the send accepted, so a crash in between duplicates a
message at worst and never loses one (the daemon de-duplicates on (bucket, key, eTag)).
SQS's own StartMessageMoveTask would do the same on AWS, but moto does not implement it (500),
and this way one code path runs everywhere.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import structlog

from openstack_handler.daemon.status import queue_depth

log = structlog.get_logger(__name__)

#: how long a received dead letter stays hidden while we move it (a crash makes it reappear).
MOVE_VISIBILITY_S = 60
#: empty receives in a row after which a redrive ends even though the DLQ still counts visible
#: messages (its counts are approximate, and may lag)
EMPTY_RECEIVES_MAX = 3


@dataclass(frozen=True)
class RedriveResult:
    """What one redrive did."""

    queue: str
    dlq_url: str | None
    source_url: str
    moved: int = 0
    failed: int = 0
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.failed == 0


def dlq_url_for(sqs: Any, name: str, source_url: str, configured: str | None) -> str | None:
    """The configured DLQ URL, else the one the source queue's redrive policy names."""
    return configured or queue_depth(sqs, name, source_url).dlq_url


def move_messages(sqs: Any, dlq_url: str, source_url: str, *, queue: str = "input",
                  limit: int | None = None, wait_time_s: int = 1) -> RedriveResult:
    """Move every message (or *limit*) from *dlq_url* to *source_url*; see the module docstring.

    Stops when a receive comes back empty and the DLQ counts no visible message (every message
    was seen once: the ones we move are gone and a failed one stays hidden for
    :data:`MOVE_VISIBILITY_S`). An empty receive alone does not end it: SQS may answer one with
    nothing while messages exist.
    """
    moved = failed = empty = 0
    while limit is None or moved + failed < limit:
        batch = 10 if limit is None else min(10, limit - moved - failed)
        messages = sqs.receive_message(
            QueueUrl=dlq_url, MaxNumberOfMessages=batch, WaitTimeSeconds=wait_time_s,
            VisibilityTimeout=MOVE_VISIBILITY_S, MessageAttributeNames=["All"],
            MessageSystemAttributeNames=["ApproximateReceiveCount"]).get("Messages", [])
        if not messages:
            empty += 1
            if empty >= EMPTY_RECEIVES_MAX or \
                    not queue_depth(sqs, f"{queue} DLQ", dlq_url).visible:
                break
            continue
        empty = 0
        sent = _send(sqs, source_url, messages)
        failed += len(messages) - len(sent)
        if sent:
            response = sqs.delete_message_batch(QueueUrl=dlq_url, Entries=[
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(sent)])
            for failure in response.get("Failed", []):
                # Sent but still in the DLQ: a later redrive sends it again; the daemon's
                # de-duplication makes that harmless.
                log.warning("redrive.delete_failed", code=failure.get("Code"),
                            detail=failure.get("Message"))
            moved += len(sent)
    log.info("redrive.done", queue=queue, moved=moved, failed=failed, dlq_url=dlq_url,
             source_url=source_url)
    return RedriveResult(queue, dlq_url, source_url, moved=moved, failed=failed)


def _send(sqs: Any, source_url: str, messages: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """SendMessageBatch copies of *messages*; returns the ones SQS accepted."""
    entries = []
    for index, message in enumerate(messages):
        entry: dict[str, Any] = {"Id": str(index), "MessageBody": message["Body"]}
        if message.get("MessageAttributes"):
            entry["MessageAttributes"] = message["MessageAttributes"]
        entries.append(entry)
    response = sqs.send_message_batch(QueueUrl=source_url, Entries=entries)
    for failure in response.get("Failed", []):
        log.error("redrive.send_failed", code=failure.get("Code"), detail=failure.get("Message"),
                  note="left in the dead-letter queue")
    accepted = {entry["Id"] for entry in response.get("Successful", [])}
    return [m for i, m in enumerate(messages) if str(i) in accepted]
