"""The input consumer: S3 events from the input queue → one synchronous invocation per message.

- Long polls the input queue, never receiving more messages than there are free invocation slots
  (``MaxNumberOfMessages = min(10, free)``); a fixed thread pool of ``concurrency`` runs the
  invocations, so at most ``concurrency`` are ever in flight.
- A receive claims its messages for a short visibility (``receive_visibility_s``, 15 s at most);
  while an invocation runs, :class:`VisibilityHeartbeat` extends its message's visibility to the
  visibility timeout every third of that claim, so a slow video is never handed to a second
  consumer. The claim is short so that a receive nobody waits for any more (the daemon stopped
  while it long-polled: :class:`~openstack_handler.daemon.receiver.Receiver`) hides what it gets only
  briefly.
- The input message is deleted only after the function succeeded; by then the function has put
  one result per record on the output queue (the drainer writes the files), and the state DB
  records each as owed, so that a stop waits for them (``StateDB.owe_result``). A ``FunctionError``
  or a failed invoke leaves the message to the visibility timeout and the redrive policy.
- De-duplication on (bucket, key, eTag): the state DB remembers successes across restarts, and an
  in-memory claim covers a duplicate that arrives while the first delivery is still running (the
  first message stays the carrier: if it fails it comes back, so the duplicate can be dropped).
  A dropped duplicate is logged as ``video.duplicate_dropped`` with why and how to have it
  processed again (``openstack-handler forget``), and recorded for ``status``.
- Bad input never stops the loop: ``s3:TestEvent`` and non-``ObjectCreated`` records are
  acknowledged and dropped; an unparsable body is logged and left for the dead-letter queue; an
  object above ``max_object_bytes`` gets a local ``.error`` result and is acknowledged, and so
  does an object deleted before it was processed (the function fails with ``NoSuchKey``).
- Where each message runs is the :class:`~openstack_handler.daemon.placement.Placement`'s
  choice: ordered targets with slots and the burst rule. A message received for a later target
  waits here (its visibility extended like a running one's) until the first target has a free
  slot or it has waited ``burst_after_s``. An invocation that found its target unavailable (the
  function never ran) moves to another target that is up at once; with none up it is offered
  again after a short backoff.
- Outages (SQS or a target unreachable, throttled) are logged once when they start and once when
  they end (:class:`Availability`), and waited out with a capped, jittered backoff: no restart,
  no spinning. A target that is down is probed with ``Invoke(InvocationType=DryRun)``, which
  touches no message, so however long the outage the backlog's receive counts do not run up
  towards the dead-letter queue. Once a dry run answers, the target takes one message (a dry run
  does not see throttling) and its full slots once that invocation succeeds. While every target
  is down nothing is received.
- Every invocation is accounted to its target in the state DB from Lambda's REPORT line
  (duration, billed GB-seconds), for ``status``.
- :attr:`last_progress` is stamped on every turn of the poll loop, for the systemd watchdog;
  :attr:`first_poll` is set once a receive has succeeded (the daemon is then READY).
- On stop: the long poll is abandoned at once (what it returns late is released), messages
  received but not started are released (visibility 0); in-flight invocations finish within the
  grace period.
"""

from __future__ import annotations

import collections
import math
import shlex
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import structlog
from botocore.exceptions import BotoCoreError, ClientError
from structlog.contextvars import bound_contextvars

from openstack_handler.daemon.availability import Availability, PollGuard
from openstack_handler.daemon.backoff import compute_backoff
from openstack_handler.daemon.deleter import SQS_MAX_BATCH, BatchDeleter, change_visibility
from openstack_handler.daemon.errors import (
    FunctionFailed,
    InvalidKey,
    InvokeFailed,
    InvokeInterrupted,
    InvokeUnavailable,
    TargetRefused,
)
from openstack_handler.daemon.events import (
    InputMessage,
    MessageKind,
    S3ObjectRef,
    invocation_payload,
    is_still_image,
    parse_input_message,
)
from openstack_handler.daemon.invoker import Invoked, LambdaInvoker
from openstack_handler.daemon.placement import Placement, Target
from openstack_handler.daemon.receiver import Receiver
from openstack_handler.daemon.results_store import ResultsStore
from openstack_handler.daemon.settings import RECEIVE_CLAIM_S
from openstack_handler.daemon.state import StateDB

log = structlog.get_logger(__name__)

#: Backoff window for a message whose invocation was throttled or could not reach Lambda.
RETRY_SOON_INITIAL_S = 2.0
RETRY_SOON_CAP_S = 60.0
#: function error types that mean the object is gone for good: acknowledged with an .error file.
OBJECT_GONE_ERRORS = frozenset({"NoSuchKey"})


class VisibilityHeartbeat:
    """Extends the visibility of tracked messages every *interval_s* in a background thread."""

    def __init__(self, *, sqs: Any, queue_url: str, visibility_timeout_s: int,
                 interval_s: float | None = None,
                 availability: Availability | None = None) -> None:
        self.sqs = sqs
        self.availability = availability or Availability("sqs_heartbeat")
        self.queue_url = queue_url
        self.visibility_timeout_s = visibility_timeout_s
        self.interval_s = interval_s if interval_s is not None else visibility_timeout_s / 3
        self._receipts: dict[str, str] = {}
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None
        self.beats = 0

    def track(self, message_id: str, receipt_handle: str) -> None:
        """Start (or keep) extending *message_id*, with its most recent receipt handle."""
        with self._lock:
            self._receipts[message_id] = receipt_handle

    def untrack(self, message_id: str) -> None:
        with self._lock:
            self._receipts.pop(message_id, None)

    def beat_once(self) -> int:
        """Extend every tracked message now; returns how many were extended."""
        with self._lock:
            receipts = list(self._receipts.values())
        if not receipts:
            return 0
        extended = change_visibility(self.sqs, self.queue_url, receipts, self.visibility_timeout_s)
        self.beats += 1
        log.debug("heartbeat", extended=extended, tracked=len(receipts))
        return extended

    def start(self) -> None:
        if self._thread is None:
            self._stopped.clear()
            self._thread = threading.Thread(target=self._run, name="visibility-heartbeat",
                                            daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def _run(self) -> None:
        while not self._stopped.wait(self.interval_s):
            try:
                self.beat_once()
            except (BotoCoreError, ClientError) as exc:  # SQS outage: logged once, not per beat
                self.availability.failed(exc, queue_url=self.queue_url)
            except Exception:  # the heartbeat thread's outermost loop: log and keep beating
                log.exception("heartbeat.failed")
            else:
                self.availability.succeeded()


@dataclass
class ConsumerStats:
    """What one consumer did (in memory; the state DB keeps the durable counters)."""

    received: int = 0
    invocations: int = 0
    succeeded: int = 0  #: messages whose invocation succeeded (and were deleted)
    failed: int = 0  #: messages whose invocation failed (left for redelivery)
    deleted: int = 0
    released: int = 0
    duplicates: int = 0
    test_events: int = 0
    invalid: int = 0
    skipped_events: int = 0
    too_large: int = 0
    gone: int = 0  #: objects deleted before they were processed
    probes: int = 0  #: dry runs of the function made while it was down (they touch no message)
    moved: int = 0  #: invocations moved to another target after theirs was unavailable


@dataclass
class _Flight:
    message_id: str
    receipt_handle: str
    refs: tuple[S3ObjectRef, ...]
    receive_count: int
    delete_on_success: bool
    started: float = field(default_factory=time.monotonic)
    #: monotonic time the message's wait began (sent to the queue, or received if later)
    waiting_since: float = field(default_factory=time.monotonic)
    target: Target | None = None  #: where it runs; None while it waits
    moves: int = 0  #: times it moved to another target after its own was unavailable


class InputConsumer:
    """Consumes the input queue; see the module docstring. One instance serves one :meth:`run`."""

    def __init__(self, *, sqs: Any, queue_url: str, state: StateDB, store: ResultsStore,
                 invoker: LambdaInvoker | None = None, placement: Placement | None = None,
                 concurrency: int = 4, wait_time_s: int = 20,
                 visibility_timeout_s: int = 90, max_object_bytes: int = 512 * 1024 * 1024,
                 heartbeat_interval_s: float | None = None,
                 outage_backoff_max_s: float = 15.0,
                 reprocess_hint: str = "openstack-handler forget --config FILE {key}",
                 receive_visibility_s: int | None = None) -> None:
        self.sqs = sqs
        #: the visibility a receive asks for; dispatched messages are extended beyond it
        self.receive_visibility_s = receive_visibility_s or min(visibility_timeout_s,
                                                                RECEIVE_CLAIM_S)
        if heartbeat_interval_s is None:
            heartbeat_interval_s = self.receive_visibility_s / 3
        self.receiver = Receiver(sqs, queue_url, name="input")
        #: how to have a dropped duplicate processed again ({key}: the video's key), for its log
        self.reprocess_hint = reprocess_hint
        self.queue_url = queue_url
        if placement is None:
            if invoker is None:
                raise ValueError("give an invoker (one target) or a placement")
            placement = Placement([Target(
                name="lambda", invoker=invoker, slots=concurrency,
                availability=Availability("lambda", cap_s=outage_backoff_max_s))])
        self.placement = placement
        self.invoker = placement.targets[0].invoker
        self.state = state
        self.store = store
        #: invocations in flight at most, over every target (the invocation threads)
        self.concurrency = placement.total_slots
        self.wait_time_s = wait_time_s
        self.visibility_timeout_s = visibility_timeout_s
        self.max_object_bytes = max_object_bytes
        self.sqs_state = Availability("sqs_input", cap_s=outage_backoff_max_s)
        self.heartbeat = VisibilityHeartbeat(sqs=sqs, queue_url=queue_url,
                                             visibility_timeout_s=visibility_timeout_s,
                                             interval_s=heartbeat_interval_s,
                                             availability=Availability(
                                                 "sqs_heartbeat", cap_s=outage_backoff_max_s))
        self.stats = ConsumerStats()
        self.deleter = BatchDeleter(sqs=sqs, queue_url=queue_url,
                                    on_deleted=lambda count: self._add_stats(deleted=count))
        self._pool = ThreadPoolExecutor(max_workers=self.concurrency,
                                        thread_name_prefix="invoke")
        self._cond = threading.Condition()
        #: every message held: waiting for a target, or running on one
        self._flights: dict[str, _Flight] = {}
        self._waiting: collections.deque[_Flight] = collections.deque()
        self._claimed: set[tuple[str, str, str]] = set()
        self._stop = threading.Event()
        self.last_progress = time.monotonic()
        self.first_poll = threading.Event()

    # -- public API --------------------------------------------------------------------------

    @property
    def lambda_state(self) -> Availability:
        """The first target's up/down state (the only one's, without targets)."""
        return self.placement.targets[0].availability

    @property
    def in_flight(self) -> int:
        with self._cond:
            return len(self._flights)

    def knows(self, bucket: str, key: str, etag: str | None) -> bool:
        """Whether this daemon is working on, or has finished, the video (for the drainer)."""
        etag = str(etag).strip('"') if etag else ""
        with self._cond:
            if any(c[0] == bucket and c[1] == key and (not etag or c[2] == etag)
                   for c in self._claimed):
                return True
        return bool(etag) and self.state.is_processed(bucket, key, etag)

    def free_slots(self) -> int:
        """How many messages a receive may take now (the placement's room)."""
        with self._cond:
            return self.placement.room(len(self._waiting))

    def poll_once(self, *, stop_event: threading.Event | None = None,
                  limit: int | None = None) -> int:
        """Receive one batch (≤ the placement's room — free slots, 1 for a target on probation —
        ≤ *limit*) and dispatch it; returns messages received.

        Waits up to a second for room first and returns 0 if none frees up. Messages that
        arrive after *stop_event* was set are released at once instead of being started.
        """
        stop = stop_event or self._stop
        with self._cond:
            self._cond.wait_for(lambda: self.placement.room(len(self._waiting)) > 0
                                or stop.is_set(), timeout=1.0)
            room = self.placement.room(len(self._waiting))
            oldest = self._waiting[0].waiting_since if self._waiting else None
        if stop.is_set() or room <= 0:
            return 0
        batch = min(SQS_MAX_BATCH, room, limit if limit is not None else SQS_MAX_BATCH)
        if batch <= 0:
            return 0
        wait_s = self.wait_time_s
        if oldest is not None:  # a held message may burst before a full long poll would end
            burst_in = self.placement.burst_in(time.monotonic() - oldest)
            if burst_in is not None:
                wait_s = min(wait_s, max(1, math.ceil(burst_in)))
        response = self.receiver.receive(
            stop, QueueUrl=self.queue_url, MaxNumberOfMessages=batch,
            WaitTimeSeconds=wait_s, VisibilityTimeout=self.receive_visibility_s,
            MessageSystemAttributeNames=["ApproximateReceiveCount", "SentTimestamp"])
        if response is None:  # stopped during the long poll: abandoned (see receiver)
            return 0
        self.sqs_state.succeeded()
        if not self.first_poll.is_set():
            self.first_poll.set()
            log.info("consumer.first_poll_ok")
        messages = response.get("Messages", [])
        self._add_stats(received=len(messages))
        for index, message in enumerate(messages):
            if stop.is_set():
                self._release(messages[index:])
                break
            self._dispatch(message)
        return len(messages)

    def _touch(self) -> None:
        self.last_progress = time.monotonic()

    def run(self, stop_event: threading.Event | None = None, *, max_messages: int | None = None,
            max_idle: float | None = None, grace_period_s: float | None = None) -> ConsumerStats:
        """Poll until *stop_event* is set (or, in burst mode, *max_messages* were received or
        nothing happened for *max_idle* seconds), then wait up to *grace_period_s* (None: no
        limit) for in-flight invocations. Returns the stats; :attr:`in_flight` tells whether the
        grace period expired with work still running.
        """
        stop = stop_event or self._stop
        self._stop = stop
        self.heartbeat.start()
        self.deleter.start()
        received = 0
        guard = PollGuard("consumer", sqs_state=self.sqs_state, queue_url=self.queue_url,
                          touch=self._touch)
        idle_since = time.monotonic()
        log.info("consumer.started", queue_url=self.queue_url, concurrency=self.concurrency)
        try:
            while not stop.is_set():
                self.last_progress = time.monotonic()
                if max_messages is not None and received >= max_messages:
                    break
                remaining = None if max_messages is None else max_messages - received
                # A target unreachable or throttling us: after its backoff, and once nothing of
                # its own is in flight, a dry run; only when one answers does it take a message
                # again (the room counts one for it), whose invocation tells whether it is still
                # throttled. No receive while no target answers at all.
                for target in self.placement.due_probes():
                    self._probe(target)
                self._start_waiting()
                if self.placement.all_down:
                    self._touch()
                    stop.wait(min(max(self.placement.next_probe_in(), 0.1), 1.0))
                    continue
                count = guard.poll(
                    lambda limit=remaining: self.poll_once(stop_event=stop, limit=limit), stop)
                if count is None:
                    continue
                received += count
                if count or self.in_flight:
                    idle_since = time.monotonic()
                elif max_idle is not None and time.monotonic() - idle_since >= max_idle:
                    break
            self._release_waiting()
            if self.in_flight:
                log.info("consumer.draining", in_flight=self.in_flight,
                         grace_period_s=grace_period_s)
            self.drain(timeout=grace_period_s)
        finally:
            left = self.in_flight
            if left:
                log.warning("consumer.grace_expired", in_flight=left,
                            note="their messages reappear after the visibility timeout")
            self.heartbeat.stop()
            self.deleter.stop()
            self.receiver.close()
            self._pool.shutdown(wait=False, cancel_futures=True)
        log.info("consumer.stopped", **vars(self.stats))
        return self.stats

    def _probe(self, target: Target) -> None:
        """One dry run of a down target's function (no message touched); on failure the next is
        backed off."""
        try:
            target.invoker.probe()
        except (InvokeUnavailable, InvokeFailed) as exc:
            self.placement.probed(target, exc)
        else:
            self.placement.probed(target, None)
            log.info("target.probe_answered", target=target.name,
                     note="one invocation, then its full slots once that succeeds")
        self._add_stats(probes=1)

    def _release_waiting(self) -> None:
        """On stop: the messages still waiting for a target are offered to other consumers."""
        with self._cond:
            waiting = list(self._waiting)
            self._waiting.clear()
        if not waiting:
            return
        for flight in waiting:
            self.heartbeat.untrack(flight.message_id)
            self._finish(flight, start_next=False)
        self._release([{"ReceiptHandle": f.receipt_handle} for f in waiting])

    def drain(self, timeout: float | None = None) -> bool:
        """Wait until no invocation is in flight (at most *timeout* s); True if drained."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._flights, timeout=timeout)

    # -- dispatch (poll thread) --------------------------------------------------------------

    def _dispatch(self, message: dict[str, Any]) -> None:
        message_id = message["MessageId"]
        receipt = message["ReceiptHandle"]
        attributes = message.get("Attributes", {})
        receive_count = int(attributes.get("ApproximateReceiveCount", 1))
        waiting_since = _waiting_since(attributes.get("SentTimestamp"))
        with bound_contextvars(message_id=message_id, receive_count=receive_count):
            with self._cond:
                flight = self._flights.get(message_id)
                if flight is not None:
                    # Redelivered while we still work on it: keep the newest receipt handle (SQS
                    # ignores a delete with an older one) and do not start it twice.
                    flight.receipt_handle = receipt
                    self.heartbeat.track(message_id, receipt)
                    log.warning("input.redelivered_in_flight")
                    return
            parsed = parse_input_message(message.get("Body", ""))
            if parsed.kind is MessageKind.TEST_EVENT:
                log.info("input.test_event_dropped")
                self._add_stats(test_events=1)
                self._delete(receipt)
                return
            if parsed.kind is MessageKind.INVALID:
                log.error("input.invalid_left_for_dlq", reason=parsed.reason)
                self._add_stats(invalid=1)
                self.state.incr("input_invalid")
                self.state.record_error("input", f"message {message_id}: {parsed.reason}")
                self._leave_for_redelivery(receipt, time.monotonic())
                return
            self._dispatch_records(message_id, receipt, receive_count, parsed, waiting_since)

    def _dispatch_records(self, message_id: str, receipt: str, receive_count: int,
                          parsed: InputMessage, waiting_since: float | None = None) -> None:
        for event_name in parsed.skipped_events:
            log.info("input.event_dropped", event_name=event_name,
                     why="only ObjectCreated:* events are processed")
            self._add_stats(skipped_events=1)
        accepted: list[S3ObjectRef] = []
        local_failure = False
        for ref in parsed.objects:
            with bound_contextvars(bucket=ref.bucket, key=ref.key):
                if is_still_image(ref.key):
                    log.info("input.image_dropped",
                             why="a still image is the web tier's upload, answered there")
                    self._add_stats(skipped_events=1)
                    continue
                why = self._claim(ref)
                if why is not None:
                    self._drop_duplicate(ref, why)
                    continue
                if ref.size is not None and ref.size > self.max_object_bytes:
                    local_failure |= not self._reject_too_large(ref)
                    continue
                accepted.append(ref)
        if not accepted:
            if local_failure:
                self._leave_for_redelivery(receipt, time.monotonic())
            else:
                self._delete(receipt)
            return
        flight = _Flight(message_id, receipt, tuple(accepted), receive_count,
                         delete_on_success=not local_failure)
        if waiting_since is not None:
            flight.waiting_since = min(flight.waiting_since, waiting_since)
        self.state.expect_results(ref.identity for ref in accepted)
        with self._cond:
            self._flights[message_id] = flight
            self._waiting.append(flight)
        self.heartbeat.track(message_id, receipt)
        self._start_waiting()

    def _start_waiting(self) -> None:
        """Start the waiting messages, oldest first, for as long as the placement finds each a
        target (a younger one cannot go where the oldest may not)."""
        starting: list[_Flight] = []
        with self._cond:
            now = time.monotonic()
            while self._waiting and not self._stop.is_set():
                flight = self._waiting[0]
                target = self.placement.take(now - flight.waiting_since)
                if target is None:
                    break
                self._waiting.popleft()
                flight.target = target
                starting.append(flight)
        for index, flight in enumerate(starting):
            try:
                future = self._pool.submit(self._run_flight, flight)
            except RuntimeError:  # pool shut down under us: undo, leave the messages to SQS
                for undone in starting[index:]:
                    assert undone.target is not None
                    self.placement.release(undone.target)
                    self._finish(undone, start_next=False)
                raise
            future.add_done_callback(self._flight_done)

    def _claim(self, ref: S3ObjectRef) -> str | None:
        """Claim the video for this delivery; None when claimed, else why it is a duplicate."""
        with self._cond:
            if ref.identity in self._claimed:
                return "the same video (bucket, key, eTag) is being processed right now"
            record = self.state.processed_record(*ref.identity)
            if record is not None:
                at = datetime.fromtimestamp(record.processed_at, UTC).strftime("%Y-%m-%d %H:%M:%S")
                return (f"already processed at {at} UTC (status {record.status}): a redelivered "
                        "event, or the same bytes uploaded again (same eTag)")
            self._claimed.add(ref.identity)
            return None

    def _drop_duplicate(self, ref: S3ObjectRef, why: str) -> None:
        """Acknowledge a duplicate delivery without invoking, where users look: one log line
        beside the video.processed ones, the count and the latest one in ``status``."""
        log.info("video.duplicate_dropped", key=ref.key, bucket=ref.bucket, etag=ref.etag,
                 why=why,
                 to_reprocess=self.reprocess_hint.replace("{key}", shlex.quote(ref.key)))
        self._add_stats(duplicates=1)
        self.state.incr("duplicates")
        self.state.record_duplicate(ref.bucket, ref.key, ref.etag, why)

    def _reject_too_large(self, ref: S3ObjectRef) -> bool:
        """Write the local ``.error`` result for an oversized object; False if that failed."""
        reason = (f"ObjectTooLarge: {ref.size} bytes is above max_object_bytes="
                  f"{self.max_object_bytes}; not sent to the function")
        try:
            written = self.store.write_error(ref.key, reason)
        except OSError as exc:
            log.error("video.reject_write_failed", error=str(exc))
            with self._cond:
                self._claimed.discard(ref.identity)
            return False
        except InvalidKey as exc:  # permanent: nothing can be written for this key; ack anyway
            log.error("video.reject_unwritable_key", error=str(exc))
            written = None
        self.state.mark_processed(*ref.identity, status="rejected")
        with self._cond:
            self._claimed.discard(ref.identity)
        self.state.incr("videos_failed")
        self.state.record_error("input", f"{ref.bucket}/{ref.key}: {reason}")
        self._add_stats(too_large=1)
        log.warning("video.processed", status="rejected", reason=reason,
                    path=str(written.path) if written else None, elapsed_ms=0.0)
        return True

    # -- invocation (pool threads) -----------------------------------------------------------

    def _run_flight(self, flight: _Flight) -> None:
        keys = [ref.key for ref in flight.refs]
        target = flight.target
        assert target is not None
        moved = False
        started = time.monotonic()
        # every line of this invocation says where it ran and how long its message had waited
        # (since it was sent to the queue) before it started there
        with bound_contextvars(message_id=flight.message_id, receive_count=flight.receive_count,
                               key=keys[0] if len(keys) == 1 else keys, target=target.name,
                               waited_ms=round((started - flight.waiting_since) * 1000)):
            self._add_stats(invocations=1)
            ok = False
            try:
                invoked = target.invoker.run(invocation_payload(flight.refs))
            except FunctionFailed as exc:
                self.placement.mark_up(target)  # the function answered
                self._account(target, ok=False, started=started, report=exc.report)
                if exc.error_type in OBJECT_GONE_ERRORS and len(flight.refs) == 1:
                    self._object_gone(flight, exc)
                else:
                    self._failed(flight, "function", exc, level="error",
                                 error_type=exc.error_type)
            except InvokeUnavailable as exc:  # retryable: the outage is logged once, not per try
                if isinstance(exc, TargetRefused) and not target.availability.down:
                    log.error("target.refused", error=str(exc),
                              note="the target does not accept our credentials; its work "
                                   "goes elsewhere until a dry run passes")
                first = not target.availability.down
                self.placement.mark_down(target, exc)
                self._account(target, ok=False, started=started)
                moved = self._move(flight, target)
                if not moved:
                    self._failed(flight, "invoke", exc, level="info" if first else "debug",
                                 hide=False)
                    self._retry_soon(flight)
            except InvokeInterrupted as exc:  # it may have run: never resent; the target is sick
                self.placement.mark_down(target, exc)
                self._account(target, ok=False, started=started)
                self._failed(flight, "invoke", exc, level="error")
            except InvokeFailed as exc:
                self._account(target, ok=False, started=started)
                self._failed(flight, "invoke", exc, level="error")
            else:
                self.placement.mark_up(target)
                self._account(target, ok=True, started=started, invoked=invoked)
                self._succeeded(flight, invoked.result)
                ok = True
            finally:
                self.placement.release(target, failed=not ok)
                if moved:
                    self._start_waiting()
                else:
                    self._finish(flight)

    def _move(self, flight: _Flight, target: Target) -> bool:
        """After *target* was unavailable (the function never ran): back to the front of the
        waiting line, for another target that is up; False when there is none."""
        if flight.moves >= len(self.placement.targets) - 1 or \
                not self.placement.other_usable(target):
            return False
        with self._cond:
            flight.moves += 1
            flight.target = None
            self._waiting.appendleft(flight)
        self._add_stats(moved=1)
        log.info("invocation.moved", from_target=target.name,
                 why="the target is unavailable; the function did not run there")
        return True

    def _account(self, target: Target, *, ok: bool, started: float,
                 invoked: Invoked | None = None, report: Any = None) -> None:
        """One invocation of *target* in the state DB: its duration and billed GB-seconds from
        Lambda's REPORT line when there is one, else the time the daemon waited for it."""
        report = invoked.report if invoked is not None else report
        duration_ms = report.duration_ms if report is not None else \
            (time.monotonic() - started) * 1000
        self.state.record_invocation(
            target.name, ok=ok, duration_ms=duration_ms,
            billed_ms=report.billed_ms if report is not None else None,
            memory_mb=report.memory_mb if report is not None else None)

    def _failed(self, flight: _Flight, source: str, exc: Exception, *, level: str,
                hide: bool = True, **extra: Any) -> None:
        elapsed_ms = round((time.monotonic() - flight.started) * 1000, 1)
        getattr(log, level)("invocation.failed_left_for_redelivery", error=str(exc),
                            elapsed_ms=elapsed_ms, **extra)
        self._add_stats(failed=1)
        self.state.incr("invocations_failed")
        self.state.record_error(source, f"{', '.join(r.key for r in flight.refs)}: {exc}")
        if hide:
            self.heartbeat.untrack(flight.message_id)
            with self._cond:
                receipt = flight.receipt_handle
            self._leave_for_redelivery(receipt, flight.started)

    def _leave_for_redelivery(self, receipt: str, received_at: float) -> None:
        """A message left to the visibility timeout and the redrive policy (a failure): it was
        received for the short claim only, so hide it for what is left of visibility_timeout_s
        since it was received — a failure comes back after the visibility timeout, and poison
        reaches the dead-letter queue at the pace it always did. A message the heartbeat
        already extended (older than the claim) keeps its visibility."""
        elapsed = time.monotonic() - received_at
        if self.receive_visibility_s >= self.visibility_timeout_s or \
                elapsed >= self.receive_visibility_s:
            return
        try:
            change_visibility(self.sqs, self.queue_url, [receipt],
                              math.ceil(self.visibility_timeout_s - elapsed))
        except (ClientError, BotoCoreError) as exc:
            log.info("input.hide_failed", error=str(exc),
                     note="the message returns after the receive's short visibility")

    def _object_gone(self, flight: _Flight, exc: FunctionFailed) -> None:
        """The object was deleted before the function read it: nothing to retry. Write an
        ``.error`` result saying so and acknowledge the message."""
        ref = flight.refs[0]
        reason = (f"ObjectGone: s3://{ref.bucket}/{ref.key} (eTag {ref.etag}) no longer exists; "
                  f"it was deleted before it was processed ({exc.message[:200]})")
        try:
            written = self.store.write_error(ref.key, reason)
        except OSError as write_exc:
            log.error("video.gone_write_failed", error=str(write_exc),
                      note="left for redelivery")
            self._add_stats(failed=1)
            self.heartbeat.untrack(flight.message_id)
            with self._cond:
                receipt = flight.receipt_handle
            self._leave_for_redelivery(receipt, flight.started)
            return
        except InvalidKey:
            written = None
        self.state.mark_processed(*ref.identity, status="gone")
        self.state.incr("videos_failed")
        self.state.record_error("input", f"{ref.bucket}/{ref.key}: {reason}")
        self._add_stats(gone=1)
        log.warning("video.processed", status="gone", reason=reason,
                    path=str(written.path) if written else None,
                    elapsed_ms=round((time.monotonic() - flight.started) * 1000, 1))
        self.heartbeat.untrack(flight.message_id)
        with self._cond:
            receipt = flight.receipt_handle
        self._delete(receipt)

    def _retry_soon(self, flight: _Flight) -> None:
        """After throttling or an unreachable endpoint, offer the message again after a short
        jittered backoff instead of the whole visibility timeout: the function never ran, and
        the backlog should move as soon as capacity returns."""
        self.heartbeat.untrack(flight.message_id)
        delay_s = round(compute_backoff(flight.receive_count, initial_s=RETRY_SOON_INITIAL_S,
                                        cap_s=RETRY_SOON_CAP_S))
        with self._cond:
            receipt = flight.receipt_handle
        try:
            change_visibility(self.sqs, self.queue_url, [receipt], delay_s)
        except (ClientError, BotoCoreError) as exc:
            log.warning("input.retry_delay_failed", error=str(exc),
                        note="the message returns after its visibility timeout")
            return
        log.info("input.retry_scheduled", delay_s=delay_s)

    def _succeeded(self, flight: _Flight, result: Any) -> None:
        elapsed_ms = round((time.monotonic() - flight.started) * 1000, 1)
        by_identity = _results_by_identity(result)
        if by_identity is None:
            log.warning("invocation.unexpected_return", got=type(result).__name__,
                        note="results still arrive on the output queue")
            by_identity = {}
        for ref in flight.refs:
            item = by_identity.get(ref.identity) or by_identity.get((ref.bucket, ref.key, None))
            status = str(item.get("status")) if item else "unknown"
            self.state.mark_processed(*ref.identity, status=status)
            # its result is on the output queue now: owed to disk (the drainer's stop waits)
            self.state.owe_result(*ref.identity, request_id=(item or {}).get("request_id"))
            if status == "error":
                self.state.incr("videos_failed")
                reason = (item or {}).get("error", {})
                self.state.record_error("function", f"{ref.bucket}/{ref.key}: {reason}")
            else:
                self.state.incr("videos_ok")
            with bound_contextvars(key=ref.key):
                log.info("video.processed", status=status, bucket=ref.bucket, etag=ref.etag,
                         request_id=(item or {}).get("request_id"), elapsed_ms=elapsed_ms)
        self._add_stats(succeeded=1)
        self.heartbeat.untrack(flight.message_id)
        if flight.delete_on_success:
            with self._cond:
                receipt = flight.receipt_handle  # the newest, if it was redelivered meanwhile
            self._delete(receipt)
        else:
            log.warning("input.kept_for_retry", why="a local result write failed")
            with self._cond:
                receipt = flight.receipt_handle
            self._leave_for_redelivery(receipt, flight.started)

    def _finish(self, flight: _Flight, *, start_next: bool = True) -> None:
        self.state.drop_unfinished(ref.identity for ref in flight.refs)  # no result owed
        self.heartbeat.untrack(flight.message_id)
        with self._cond:
            self._flights.pop(flight.message_id, None)
            for ref in flight.refs:
                self._claimed.discard(ref.identity)
            self._cond.notify_all()
        if start_next:
            self._start_waiting()  # the slot it freed goes to the oldest waiting message

    def _flight_done(self, future: Future[None]) -> None:
        exc = future.exception() if not future.cancelled() else None
        if exc is not None:  # the invocation thread's outermost boundary
            log.error("invocation.crashed", exc_info=exc)

    # -- SQS helpers -------------------------------------------------------------------------

    def _delete(self, receipt: str) -> None:
        """The message's effect is durable: delete it, batched with others (see deleter)."""
        self.deleter.add(receipt)

    def _release(self, messages: Sequence[dict[str, Any]]) -> None:
        receipts = [m["ReceiptHandle"] for m in messages]
        try:
            released = change_visibility(self.sqs, self.queue_url, receipts, 0)
        except (ClientError, BotoCoreError) as exc:
            log.warning("input.release_failed", count=len(receipts), error=str(exc))
            return
        self._add_stats(released=released)
        log.info("input.released_unstarted", count=released)

    def _add_stats(self, **deltas: int) -> None:
        with self._cond:
            for name, delta in deltas.items():
                setattr(self.stats, name, getattr(self.stats, name) + delta)


def _results_by_identity(result: Any) -> dict[tuple[str, str, str | None], dict[str, Any]] | None:
    """Index the function's ``{"results": [...]}`` return by (bucket, key, etag)."""
    if not isinstance(result, dict) or not isinstance(result.get("results"), list):
        return None
    index: dict[tuple[str, str, str | None], dict[str, Any]] = {}
    for item in result["results"]:
        if isinstance(item, dict) and isinstance(item.get("key"), str):
            bucket = str(item.get("bucket", ""))
            etag = item.get("etag")
            index[(bucket, item["key"], str(etag).strip('"') if etag else None)] = item
            index.setdefault((bucket, item["key"], None), item)
    return index


def _waiting_since(sent_timestamp: str | None) -> float | None:
    """The monotonic time a message's wait began, from SQS's ``SentTimestamp`` (epoch ms)."""
    if not sent_timestamp:
        return None
    try:
        waited_s = time.time() - int(sent_timestamp) / 1000
    except ValueError:
        return None
    return time.monotonic() - max(0.0, waited_s)
