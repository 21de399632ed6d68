"""``openstack-handler redrive``: move dead letters back to the queue they died on.

Once the cause of a poison message is fixed, its copy in the dead-letter queue is sent back to
the source queue: receive from the DLQ → send to the source (same body and message attributes)
→ delete from the DLQ, deleting only what the send accepted, so a crash in between duplicates a
message at worst and never loses one (the daemon de-duplicates on (bucket, key, eTag)).
SQS's own StartMessageMoveTask would do the same on AWS, but moto does not implement it (500),
and this way one code path runs everywhere.

Serverless mode has no dead-letter queue of its own but a failure queue (the function's
OnFailure destination), whose records carry the event Lambda gave up on: ``--queue failed``
invokes the function with each of those events again (:func:`reinvoke_failures`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import structlog
from botocore.exceptions import ClientError

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
        _delete(sqs, dlq_url, sent)
        moved += len(sent)
    log.info("redrive.done", queue=queue, moved=moved, failed=failed, dlq_url=dlq_url,
             source_url=source_url)
    return RedriveResult(queue, dlq_url, source_url, moved=moved, failed=failed)


def _delete(sqs: Any, url: str, messages: Sequence[dict[str, Any]]) -> None:
    """Delete what was moved. One that stays (its delete failed) is moved again by a later
    redrive: the daemon's de-duplication makes that harmless, and a re-invoked event's CSV is
    written again the same."""
    if not messages:
        return
    response = sqs.delete_message_batch(QueueUrl=url, Entries=[
        {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)])
    for failure in response.get("Failed", []):
        log.warning("redrive.delete_failed", code=failure.get("Code"),
                    detail=failure.get("Message"))


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


def reinvoke_failures(sqs: Any, lam: Any, failure_url: str, function_name: str, *,
                      limit: int, wait_time_s: int = 1) -> RedriveResult:
    """Send the events of serverless mode's failure records back through the function.

    Each record on the failure queue (Lambda's OnFailure destination) carries the event it gave
    up on as ``requestPayload``. That event is invoked again asynchronously (``Event``: the same
    retries and destination apply), and the record is deleted once Lambda accepted it (202). A
    record that cannot be read stays where it is, counted as failed; so does one whose invoke
    was refused.
    """
    moved = failed = empty = 0
    while moved + failed < limit:
        messages = sqs.receive_message(
            QueueUrl=failure_url, MaxNumberOfMessages=min(10, limit - moved - failed),
            WaitTimeSeconds=wait_time_s, VisibilityTimeout=MOVE_VISIBILITY_S).get("Messages", [])
        if not messages:
            empty += 1
            if empty >= EMPTY_RECEIVES_MAX or \
                    not queue_depth(sqs, "failed", failure_url).visible:
                break
            continue
        empty = 0
        done = []
        for message in messages:
            payload = _request_payload(message["Body"])
            if payload is None:
                log.error("redrive.unreadable_failure_record", message_id=message["MessageId"],
                          note="left on the failure queue")
                failed += 1
                continue
            try:
                status = lam.invoke(FunctionName=function_name, InvocationType="Event",
                                    Payload=json.dumps(payload).encode())["StatusCode"]
            except ClientError as exc:
                log.error("redrive.invoke_refused", message_id=message["MessageId"],
                          error=exc.response.get("Error", {}).get("Code"),
                          note="left on the failure queue")
                failed += 1
                continue
            if status != 202:
                failed += 1
                continue
            done.append(message)
        _delete(sqs, failure_url, done)
        moved += len(done)
    log.info("redrive.done", queue="failed", moved=moved, failed=failed, dlq_url=failure_url,
             function=function_name)
    return RedriveResult("failed", failure_url, function_name, moved=moved, failed=failed)


def _request_payload(body: str) -> dict[str, Any] | None:
    """The event a failure record carries (``requestPayload``), or None if it has none."""
    try:
        record = json.loads(body)
    except ValueError:
        return None
    payload = record.get("requestPayload") if isinstance(record, dict) else None
    return payload if isinstance(payload, dict) else None
