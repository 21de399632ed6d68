"""The output drainer: result messages from the output queue → result files on local disk.

Each message is one video's result (docs/contracts.md). ``status: ok`` writes
``<results_dir>/<key stem>.csv`` with the ``csv`` text; ``status: error`` writes ``<stem>.error``
with the reason. The message is deleted only after the file is durable (the store fsyncs the file
and its directory before returning). A message that is not a result — not JSON, an unknown schema,
no bucket/key to tell which video it is about — is logged and *not* deleted: the output queue's
redrive policy moves it to the output dead-letter queue, where an operator can inspect it.

A result for a video this daemon does not know (never received, or received by another handler,
or S3 triggered the function directly) is written all the same, with a log line saying so.

When the results dir cannot be written (unwritable, full), the failing message and the rest of its
batch are not deleted; the drainer logs the outage once, stops receiving (every receive would
count towards the output queue's ``maxReceiveCount``), probes the dir with a capped backoff, and
once a probe succeeds releases the held messages (visibility 0) so they are written at once.
SQS outages are waited out the same way, logged once when they start and once when they end.

After a receive that returned a partial batch, the drainer waits ``batch_window_s`` (50 ms) before
the next one, so that the results of a burst of invocations come several to a receive and a
delete instead of one or two: a quarter fewer requests on the output queue at concurrency 32 (and
less of a local SQS's CPU), for a result file at most 50 ms later.

On stop, the long poll is abandoned at once (openstack_handler.daemon.receiver); then :meth:`flush`
waits for what the daemon owes: every video whose invocation succeeded and whose result is not
written yet (the state DB's ``awaited`` rows, settled by whichever drainer writes the result). It
receives with long polls of a second until none is owed or its time is up, and then names each
one still missing (they stay on the output queue for the next start). It does not stop at an
empty receive: SQS may answer a receive with nothing while messages exist (a short poll samples
a subset of its servers; a message may be briefly hidden by a receive abandoned on stop, or sent
a little after its invocation returned).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import structlog
from botocore.exceptions import BotoCoreError, ClientError
from structlog.contextvars import bound_contextvars

from openstack_handler.daemon.availability import Availability, PollGuard
from openstack_handler.daemon.deleter import SQS_MAX_BATCH, change_visibility, delete_batch
from openstack_handler.daemon.errors import InvalidResult
from openstack_handler.daemon.receiver import Receiver
from openstack_handler.daemon.results_store import ResultsStore
from openstack_handler.daemon.state import OwedResult, StateDB

log = structlog.get_logger(__name__)

SUPPORTED_SCHEMAS = (1,)
#: after a partial batch, how long to let more results gather before the next receive
BATCH_WINDOW_S = 0.05
#: how long messages held during a results-dir outage stay hidden (the output queue's own
#: visibility, which they had before receives asked for a short claim)
HOLD_VISIBILITY_S = 60
#: the flush's long poll: short enough to notice at once that nothing is owed any more
FLUSH_POLL_S = 1
#: the pause after a failed receive in the flush (SQS blipped: try again while time is left)
FLUSH_RETRY_S = 0.5
#: how many missing results the flush names in its log line (the count is always complete)
MISSING_NAMED = 50


@dataclass(frozen=True)
class ResultMessage:
    """A validated result message."""

    status: str  # "ok" | "error"
    bucket: str
    key: str
    etag: str | None
    csv: str | None
    reason: str | None
    request_id: str | None
    raw: dict[str, Any] = field(compare=False, repr=False)


def parse_result(body: str) -> ResultMessage:
    """Validate one output-queue body; raise :class:`InvalidResult` saying what is wrong."""
    try:
        doc = json.loads(body)
    except (json.JSONDecodeError, TypeError) as exc:
        raise InvalidResult(f"body is not JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise InvalidResult("body is JSON but not an object")
    schema = doc.get("schema", 1)
    if schema not in SUPPORTED_SCHEMAS:
        raise InvalidResult(f"unsupported result schema {schema!r}")
    bucket, key = doc.get("bucket"), doc.get("key")
    if not (isinstance(bucket, str) and bucket and isinstance(key, str) and key):
        raise InvalidResult("result names no video (bucket and key are required)")
    status = doc.get("status")
    etag = doc.get("etag")
    request_id = doc.get("request_id")
    if status == "ok":
        csv = doc.get("csv")
        if not isinstance(csv, str):
            raise InvalidResult("status ok without a csv string")
        return ResultMessage("ok", bucket, key, etag, csv, None, request_id, doc)
    if status == "error":
        error = doc.get("error")
        if not isinstance(error, dict):
            raise InvalidResult("status error without an error object")
        reason = error.get("reason") or error.get("message") or error.get("type")
        if not isinstance(reason, str) or not reason:
            raise InvalidResult("error result without a reason")
        if isinstance(error.get("type"), str) and not reason.startswith(error["type"]):
            reason = f"{error['type']}: {reason}"
        return ResultMessage("error", bucket, key, etag, None, reason, request_id, doc)
    raise InvalidResult(f"unknown result status {status!r}")


@dataclass
class DrainerStats:
    """What one drainer did (in memory)."""

    received: int = 0
    written: int = 0  #: files whose content changed
    unchanged: int = 0  #: idempotent re-deliveries: same bytes already on disk
    errors_written: int = 0
    invalid: int = 0  #: left for the output DLQ
    write_failed: int = 0  #: left for redelivery
    deleted: int = 0
    unknown: int = 0  #: results for videos this daemon does not know (written anyway)
    held: int = 0  #: messages not attempted because the results dir was failing


class OutputDrainer:
    """Drains the output queue into a :class:`ResultsStore`."""

    def __init__(self, *, sqs: Any, queue_url: str, store: ResultsStore, state: StateDB,
                 wait_time_s: int = 20,
                 is_known: Callable[[str, str, str | None], bool] | None = None,
                 outage_backoff_max_s: float = 15.0,
                 batch_window_s: float = BATCH_WINDOW_S,
                 receive_visibility_s: int | None = None) -> None:
        self.sqs = sqs
        #: the visibility a receive asks for (None: the queue's own); short in the daemon, so
        #: that a long poll abandoned on stop hides what it gets only briefly
        self.receive_visibility_s = receive_visibility_s
        self.receiver = Receiver(sqs, queue_url, name="output")
        self.batch_window_s = batch_window_s
        self.queue_url = queue_url
        self.store = store
        self.state = state
        self.wait_time_s = wait_time_s
        self.is_known = is_known
        self.stats = DrainerStats()
        self.sqs_state = Availability("sqs_output", cap_s=outage_backoff_max_s)
        self.disk_state = Availability("results_dir", initial_s=1.0, cap_s=outage_backoff_max_s)
        self.last_progress = time.monotonic()
        self._held: list[str] = []  # receipts not attempted while the results dir was failing
        self._disk_retry_at = 0.0

    def poll_once(self, *, limit: int | None = None, wait_time_s: int | None = None,
                  stop: threading.Event | None = None) -> int:
        """Receive one batch, write the results, delete what is durable; returns received.

        With *stop*, a long poll is abandoned when it is set (see openstack_handler.daemon.receiver).
        """
        batch = min(SQS_MAX_BATCH, limit if limit is not None else SQS_MAX_BATCH)
        wait = self.wait_time_s if wait_time_s is None else wait_time_s
        params: dict[str, Any] = {
            "QueueUrl": self.queue_url, "MaxNumberOfMessages": batch, "WaitTimeSeconds": wait,
            "MessageSystemAttributeNames": ["ApproximateReceiveCount"]}
        if self.receive_visibility_s:
            params["VisibilityTimeout"] = self.receive_visibility_s
        if stop is None or wait == 0:
            response = self.sqs.receive_message(**params)
        else:
            response = self.receiver.receive(stop, **params)
            if response is None:  # stopped during the long poll: abandoned
                return 0
        self.sqs_state.succeeded()
        messages = response.get("Messages", [])
        self.stats.received += len(messages)
        done = []
        for index, message in enumerate(messages):
            if self.disk_state.down:  # do not try the rest of the batch: hold it
                self._hold(messages[index:])
                break
            if self._handle(message):
                done.append(message)
        if done:
            self._delete(done)
        return len(messages)

    def _touch(self) -> None:
        self.last_progress = time.monotonic()

    def run(self, stop_event: threading.Event | None = None, *, max_messages: int | None = None,
            max_idle: float | None = None) -> DrainerStats:
        """Drain until *stop_event* is set (burst mode: *max_messages* / *max_idle* seconds);
        the daemon then calls :meth:`flush`."""
        stop = stop_event or threading.Event()
        received = 0
        guard = PollGuard("drainer", sqs_state=self.sqs_state, queue_url=self.queue_url,
                          touch=self._touch)
        idle_since = time.monotonic()
        log.info("drainer.started", queue_url=self.queue_url)
        while not stop.is_set():
            self.last_progress = time.monotonic()
            if max_messages is not None and received >= max_messages:
                break
            if self.disk_state.down and not self._disk_recovered():
                stop.wait(max(0.05, self._disk_retry_at - time.monotonic()))
                continue
            limit = None if max_messages is None else max_messages - received
            count = guard.poll(lambda limit=limit: self.poll_once(limit=limit, stop=stop), stop)
            if count is None:
                continue
            received += count
            if count:
                idle_since = time.monotonic()
                if count < SQS_MAX_BATCH and self.batch_window_s > 0:
                    stop.wait(self.batch_window_s)  # let the rest of a burst gather
            elif max_idle is not None and time.monotonic() - idle_since >= max_idle:
                break
        self.receiver.close()
        log.info("drainer.stopped", **vars(self.stats))
        return self.stats

    def flush(self, *, timeout_s: float) -> list[OwedResult]:
        """Write the results the daemon owes, waiting up to *timeout_s* for them (long polls of
        :data:`FLUSH_POLL_S`, whatever else arrives is written too); returns those still missing
        at the end, each named in the log (they stay on the output queue)."""
        deadline = time.monotonic() + timeout_s
        flushed = 0
        failing = False
        while owed := self.state.owed_results():
            self.last_progress = time.monotonic()
            if time.monotonic() >= deadline or self.disk_state.down:
                break
            try:
                flushed += self.poll_once(wait_time_s=FLUSH_POLL_S)
            except (BotoCoreError, ClientError) as exc:
                if not failing:
                    log.warning("drainer.flush_receive_failed", error=str(exc),
                                note="trying again while the flush has time")
                failing = True
                time.sleep(min(FLUSH_RETRY_S, max(0.0, deadline - time.monotonic())))
                continue
            failing = False
        if flushed:
            log.info("drainer.flushed", messages=flushed)
        if owed:
            why = "the results dir failed" if self.disk_state.down else \
                f"not on the output queue within {timeout_s:.1f} s"
            log.warning("drainer.results_missing", count=len(owed), why=why,
                        missing=[{"bucket": o.bucket, "key": o.key, "etag": o.etag,
                                  "request_id": o.request_id} for o in owed[:MISSING_NAMED]],
                        note="left on the output queue: written at the next start, or by "
                             "another replica")
        return owed

    # -- results dir outage ------------------------------------------------------------------

    def _hold(self, messages: list[dict[str, Any]]) -> None:
        receipts = [m["ReceiptHandle"] for m in messages]
        self._held.extend(receipts)
        self.stats.held += len(messages)
        if self.receive_visibility_s:  # received for a short claim: keep them while we wait
            try:
                change_visibility(self.sqs, self.queue_url, receipts, HOLD_VISIBILITY_S)
            except (ClientError, BotoCoreError) as exc:
                log.info("output.hold_extend_failed", count=len(receipts), error=str(exc),
                         note="they return to the queue after the receive's short visibility")

    def _disk_failed(self, exc: OSError, **context: Any) -> None:
        delay = self.disk_state.failed(exc, results_dir=str(self.store.root), **context)
        self._disk_retry_at = time.monotonic() + delay

    def _disk_recovered(self) -> bool:
        """Probe the results dir when its backoff is due; on success release the held messages."""
        if time.monotonic() < self._disk_retry_at:
            return False
        try:
            self.store.probe()
        except OSError as exc:
            self._disk_failed(exc)
            return False
        self.disk_state.succeeded()
        held, self._held = self._held, []
        if held:
            try:
                released = change_visibility(self.sqs, self.queue_url, held, 0)
            except (ClientError, BotoCoreError) as exc:
                log.info("output.release_failed", count=len(held), error=str(exc),
                         note="they return after the queue's visibility timeout")
            else:
                log.info("output.released_after_disk_recovery", count=released)
        return True

    def _handle(self, message: dict[str, Any]) -> bool:
        """Write one result; True when it is durable and the message may be deleted."""
        receive_count = int(message.get("Attributes", {}).get("ApproximateReceiveCount", 1))
        with bound_contextvars(message_id=message["MessageId"], receive_count=receive_count):
            try:
                result = parse_result(message.get("Body", ""))
            except InvalidResult as exc:
                self._invalid(message, str(exc))
                return False
            with bound_contextvars(bucket=result.bucket, key=result.key,
                                   request_id=result.request_id):
                try:
                    if result.status == "ok":
                        outcome = self.store.write_csv(result.key, result.csv or "")
                    else:
                        outcome = self.store.write_error(result.key, result.reason or "error")
                except InvalidResult as exc:  # e.g. a key with no usable path component
                    self._invalid(message, str(exc))
                    return False
                except OSError as exc:
                    log.error("result.write_failed_left_for_redelivery", error=str(exc),
                              errno=exc.errno, path=exc.filename)
                    self.stats.write_failed += 1
                    self.state.record_error("results", f"{result.key}: {exc}")
                    self._disk_failed(exc, key=result.key)
                    self._hold([message])
                    return False
                if self.is_known is not None and not self.is_known(result.bucket, result.key,
                                                                   result.etag):
                    self.stats.unknown += 1
                    log.info("result.for_unknown_video", etag=result.etag,
                             note="written anyway: another handler, a direct S3 trigger or an "
                                  "earlier run of this one may have invoked the function")
                self.state.settle_result(result.bucket, result.key, result.etag)
                if outcome.changed:
                    self.stats.written += 1
                    self.state.incr("results_written")
                else:
                    self.stats.unchanged += 1
                if result.status == "error":
                    self.stats.errors_written += 1
                log.info("result.written", status=result.status, path=str(outcome.path),
                         changed=outcome.changed)
                return True

    def _invalid(self, message: dict[str, Any], reason: str) -> None:
        log.error("result.invalid_left_for_dlq", reason=reason,
                  body_preview=message.get("Body", "")[:200])
        self.stats.invalid += 1
        self.state.incr("results_invalid")
        self.state.record_error("output", f"message {message['MessageId']}: {reason}")

    def _delete(self, messages: list[dict[str, Any]]) -> None:
        self.stats.deleted += delete_batch(
            self.sqs, self.queue_url, [m["ReceiptHandle"] for m in messages],
            event="output.delete_failed", note="redelivered results are rewritten idempotently")