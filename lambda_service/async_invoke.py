"""Asynchronous (``Event``) invocations with Lambda's own contract: a queue of events per function,
retries after a function error, a maximum event age, and destinations.

- The Invoke call answers 202 at once; the event waits in its function's queue and runs when one
  of the function's environments is free (at most ``concurrency`` at a time: one runner thread
  per environment).
- A function error (``X-Amz-Function-Error`` on the result: the handler raised, timed out, ran out
  of memory or exited) is retried up to ``MaximumRetryAttempts`` times (0..2, default 2), the
  first retry :data:`RETRY_DELAYS_S` [0] after the failure (Lambda: about a minute), the second
  [1] after the next (about two minutes). A retry keeps the event's request id, as Lambda's does.
- An event that finds every environment busy (throttled: synchronous invocations or a lower
  reserved concurrency hold them) goes back to the queue without counting as an attempt, and
  is tried again after :data:`THROTTLE_BACKOFF_S` (Lambda: from a second, doubling, at most five
  minutes) until it runs or reaches its maximum age: Lambda's separate rule for throttles and
  system errors, apart from the function-error retries. (The pool has no other system error an
  event could meet: a worker that dies is the function's error, ``Runtime.ExitError``.)
- An event older than ``MaximumEventAgeInSeconds`` (default six hours) when its turn comes is
  not run again: it is discarded with the condition ``EventAgeExceeded``; one whose retries are
  used up with ``RetriesExhausted``.
- A discarded event goes to the ``OnFailure`` destination, a success to ``OnSuccess``, when the
  function's event invoke config names one (:mod:`~lambda_service.event_invoke_config`),
  as the invocation record Lambda documents: ``version``, ``timestamp``, ``requestContext``
  (``requestId``, ``functionArn``, ``condition``, ``approximateInvokeCount``), ``requestPayload``,
  ``responseContext`` (``statusCode``, ``executedVersion``, ``functionError``) and
  ``responsePayload`` (the last two absent for an event that never ran).

``time_scale`` (the endpoint spec's ``async_time_scale``, default 1.0) multiplies every duration
of this contract, the retry delays and the maximum event age alike: a test runs Lambda's minutes
as fractions of a second and keeps their proportions. Nothing else uses it.

Injected faults (:mod:`~lambda_service.faults`) do not apply here: an Event invocation runs
its handler.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import json
import queue
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import structlog
from botocore.exceptions import BotoCoreError, ClientError
from tenacity import (
    RetryError,
    Retrying,
    retry_if_exception_type,
    stop_after_delay,
    wait_exponential,
)

from lambda_service.event_invoke_config import EventInvokeConfigs
from lambda_service.pool import FunctionPool, InvocationResult, PoolStopped, Throttled

log = structlog.get_logger()

#: Lambda's delays before the first and the second retry of a failed asynchronous invocation.
RETRY_DELAYS_S = (60.0, 120.0)
#: Lambda's backoff before trying again an event it could not run (throttled): the first delay
#: and the most, doubling in between.
THROTTLE_BACKOFF_S = (1.0, 300.0)
#: events a function's queue holds before Invoke answers 429 (Lambda's queue is far larger; this
#: bounds the local cloud's memory)
QUEUE_LIMIT = 10_000
#: how long a destination's SQS may stay unreachable before the record is given up (and logged)
DESTINATION_PATIENCE_S = 30.0

RETRIES_EXHAUSTED = "RetriesExhausted"
EVENT_AGE_EXCEEDED = "EventAgeExceeded"
SUCCESS = "Success"


class QueueFull(Exception):
    """The function's event queue holds QUEUE_LIMIT events already."""


@dataclass
class AsyncEvent:
    """One queued Event invocation; `attempts` counts the times the function ran it."""

    function: str
    request_id: str
    payload: bytes
    enqueued_at: float  # monotonic
    attempts: int = 0
    throttles: int = 0  # the times it found no free environment
    last_result: InvocationResult | None = field(default=None, repr=False)


def destination_record(event: AsyncEvent, function_arn: str, condition: str,
                       now: datetime | None = None) -> dict[str, Any]:
    """The invocation record Lambda sends to a destination (its documented shape)."""
    stamp = (now or datetime.now(UTC)).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    record: dict[str, Any] = {
        "version": "1.0", "timestamp": stamp,
        "requestContext": {"requestId": event.request_id,
                           "functionArn": f"{function_arn}:$LATEST", "condition": condition,
                           "approximateInvokeCount": event.attempts},
        "requestPayload": _json_or_text(event.payload)}
    result = event.last_result
    if result is not None:
        context: dict[str, Any] = {"statusCode": 200, "executedVersion": "$LATEST"}
        if result.function_error:
            context["functionError"] = result.function_error
        record["responseContext"] = context
        record["responsePayload"] = _json_or_text(result.payload)
    return record


def _json_or_text(payload: bytes) -> Any:
    if not payload:
        return None
    try:
        return json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return payload.decode(errors="replace")


class Destinations:
    """Sends invocation records to SQS queues named by ARN (with the endpoint's SQS client)."""

    def __init__(self, sqs: Callable[[], Any], patience_s: float = DESTINATION_PATIENCE_S) -> None:
        self._sqs_factory = sqs
        self._sqs: Any = None
        self._lock = threading.Lock()
        self._patience_s = patience_s
        self._urls: dict[str, str] = {}

    def _client(self) -> Any:
        with self._lock:
            if self._sqs is None:
                self._sqs = self._sqs_factory()
            return self._sqs

    def send(self, queue_arn: str, record: Mapping[str, Any]) -> bool:
        """Deliver *record*; False (logged) if SQS refused or stayed unreachable."""
        body = json.dumps(record)
        try:
            for attempt in Retrying(retry=retry_if_exception_type((BotoCoreError, ClientError)),
                                    stop=stop_after_delay(self._patience_s),
                                    wait=wait_exponential(multiplier=0.2, max=5)):
                with attempt:
                    self._client().send_message(QueueUrl=self._url(queue_arn), MessageBody=body)
        except RetryError as exc:
            log.error("destination_failed", destination=queue_arn,
                      request_id=record["requestContext"]["requestId"],
                      error=str(exc.last_attempt.exception()))
            return False
        return True

    def _url(self, queue_arn: str) -> str:
        url = self._urls.get(queue_arn)
        if url is None:
            *_, account, name = queue_arn.split(":")
            url = self._client().get_queue_url(QueueName=name,
                                               QueueOwnerAWSAccountId=account)["QueueUrl"]
            self._urls[queue_arn] = url
        return str(url)


class AsyncInvocations:
    """Every function's event queue, its runners, the retry timer and the destinations."""

    def __init__(self, pools: Mapping[str, FunctionPool], configs: EventInvokeConfigs,
                 destinations: Destinations, *, function_arn: Callable[[str], str],
                 time_scale: float = 1.0, clock: Callable[[], float] = time.monotonic) -> None:
        if not 0 < time_scale <= 1:
            raise ValueError("time_scale must be in (0, 1]")
        self._pools = dict(pools)
        self._configs = configs
        self._destinations = destinations
        self._function_arn = function_arn
        self._scale = time_scale
        self._clock = clock
        self._queues: dict[str, queue.Queue[AsyncEvent | None]] = {
            name: queue.Queue(QUEUE_LIMIT) for name in self._pools}
        self._timer = threading.Condition()
        self._due: list[tuple[float, int, AsyncEvent]] = []
        self._seq = itertools.count()
        self._stopped = False
        self._counters: dict[str, Counter[str]] = {name: Counter() for name in self._pools}
        self._threads: list[threading.Thread] = []
        self._runners: Counter[str] = Counter()
        self._started = False

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        self._started = True
        for name in list(self._pools):
            self._add_runners(name)
        tick = threading.Thread(target=self._tick, daemon=True, name="async-retries")
        self._threads.append(tick)
        tick.start()

    def _add_runners(self, name: str) -> None:
        """As many runners as the function has environments (more when it grew)."""
        pool = self._pools[name]
        while self._runners[name] < pool.function.concurrency:
            self._runners[name] += 1
            thread = threading.Thread(target=self._run, args=(name,), daemon=True,
                                      name=f"async-{name}-{self._runners[name]}")
            self._threads.append(thread)
            thread.start()

    def set_pool(self, name: str, pool: FunctionPool) -> None:
        """A function made (CreateFunction) or replaced (a new configuration or code)."""
        if name not in self._queues:
            self._queues[name] = queue.Queue(QUEUE_LIMIT)
            self._counters[name] = Counter()
        self._pools[name] = pool
        if self._started:
            self._add_runners(name)

    def remove(self, name: str) -> None:
        """A function deleted: its runners end; what was queued for it is dropped."""
        self._pools.pop(name, None)
        events = self._queues.get(name)
        for _ in range(self._runners.pop(name, 0)):
            if events is not None:
                with contextlib.suppress(queue.Full):
                    events.put_nowait(None)

    def stop(self) -> None:
        """Stop taking and running events (what is queued is lost, as the local cloud's state)."""
        with self._timer:
            self._stopped = True
            self._timer.notify_all()
        for name, pool in self._pools.items():
            for _ in range(pool.function.concurrency):
                try:
                    self._queues[name].put_nowait(None)
                except queue.Full:
                    break  # runners see _stopped after their current event

    # -- the Invoke side ---------------------------------------------------------------------
    def submit(self, function: str, payload: bytes) -> str:
        """Queue an Event invocation of *function*; returns its request id."""
        event = AsyncEvent(function, str(uuid.uuid4()), payload, self._clock())
        self._enqueue(event)
        self._count(function, "events_queued")
        return event.request_id

    def stats(self, function: str) -> dict[str, Any]:
        with self._timer:
            retrying = sum(1 for _, _, e in self._due if e.function == function)
        return {"queued_events": self._queues[function].qsize(), "retries_pending": retrying,
                **self._counters[function]}

    # -- internals ---------------------------------------------------------------------------
    def _enqueue(self, event: AsyncEvent) -> None:
        if event.function not in self._pools:
            log.info("async_event_dropped", function=event.function,
                     request_id=event.request_id, why="the function was deleted")
            return
        try:
            self._queues[event.function].put_nowait(event)
        except queue.Full as exc:
            raise QueueFull(event.function) from exc

    def _count(self, function: str, name: str) -> None:
        with self._timer:
            self._counters[function][name] += 1

    def _run(self, function: str) -> None:
        """One runner: the next event of *function*, on the next free environment."""
        events = self._queues[function]
        while True:
            event = events.get()
            pool = self._pools.get(function)  # the newest version of the function
            if event is None or self._stopped or pool is None:
                return
            config = self._configs.effective(function)
            if self._clock() - event.enqueued_at >= config.event_age_s * self._scale:
                self._discard(event, EVENT_AGE_EXCEEDED, config.on_failure)
                continue
            try:
                result = pool.invoke(event.payload, request_id=event.request_id, block=False)
            except Throttled:
                self._schedule_after_throttle(event)
                continue
            except PoolStopped:
                return
            event.attempts += 1
            event.last_result = result
            if not result.function_error:
                self._count(function, "events_succeeded")
                if config.on_success:
                    self._deliver(event, SUCCESS, config.on_success)
            elif event.attempts <= config.retries:
                self._schedule_retry(event)
            else:
                self._discard(event, RETRIES_EXHAUSTED, config.on_failure)

    def _schedule_retry(self, event: AsyncEvent) -> None:
        delay = RETRY_DELAYS_S[min(event.attempts, len(RETRY_DELAYS_S)) - 1] * self._scale
        log.info("async_retry_scheduled", function=event.function, request_id=event.request_id,
                 attempt=event.attempts, delay_s=round(delay, 3),
                 error=event.last_result.function_error if event.last_result else None)
        self._push_due(event, delay, "retries")

    def _schedule_after_throttle(self, event: AsyncEvent) -> None:
        event.throttles += 1
        first, most = THROTTLE_BACKOFF_S
        delay = min(first * 2 ** (event.throttles - 1), most) * self._scale
        log.info("async_event_throttled", function=event.function, request_id=event.request_id,
                 throttles=event.throttles, delay_s=round(delay, 3))
        self._push_due(event, delay, "throttle_retries")

    def _push_due(self, event: AsyncEvent, delay: float, counter: str) -> None:
        with self._timer:
            heapq.heappush(self._due, (self._clock() + delay, next(self._seq), event))
            self._counters[event.function][counter] += 1
            self._timer.notify_all()

    def _tick(self) -> None:
        """Move retries that fell due back into their function's queue."""
        with self._timer:
            while not self._stopped:
                now = self._clock()
                while self._due and self._due[0][0] <= now:
                    _, _, event = heapq.heappop(self._due)
                    try:
                        self._enqueue(event)
                    except QueueFull:
                        heapq.heappush(self._due, (now + 1.0, next(self._seq), event))
                        break
                timeout = self._due[0][0] - now if self._due else None
                self._timer.wait(timeout)

    def _discard(self, event: AsyncEvent, condition: str, destination: str | None) -> None:
        self._count(event.function, "events_failed")
        log.warning("async_event_discarded", function=event.function,
                    request_id=event.request_id, condition=condition, attempts=event.attempts,
                    destination=destination)
        if destination:
            self._deliver(event, condition, destination)

    def _deliver(self, event: AsyncEvent, condition: str, destination: str) -> None:
        record = destination_record(event, self._function_arn(event.function), condition)
        if self._destinations.send(destination, record):
            self._count(event.function, "destination_records")
            log.info("destination_record_sent", function=event.function,
                     request_id=event.request_id, condition=condition, destination=destination)
        else:
            self._count(event.function, "destination_failures")
