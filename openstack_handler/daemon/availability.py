"""Outage bookkeeping for one dependency (SQS, Lambda, the results dir): log state changes, not
retries, and say how long to wait before the next try.

The first failure logs one warning (``<name>.unavailable``); later failures of the same outage are
logged at debug only; the first success afterwards logs ``<name>.recovered`` with how long it was
down and how many tries failed. :meth:`Availability.failed` returns the full-jitter backoff
(:func:`compute_backoff`, with a floor so a waiting loop never spins).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import structlog
from botocore.exceptions import BotoCoreError, ClientError

from openstack_handler.daemon.backoff import compute_backoff

log = structlog.get_logger(__name__)

#: the shortest wait between two tries of an unavailable dependency.
MIN_WAIT_S = 0.2


class Availability:
    """Thread-safe up/down state of one dependency; see the module docstring."""

    def __init__(self, name: str, *, initial_s: float = 0.5, cap_s: float = 15.0,
                 clock: Callable[[], float] = time.monotonic,
                 rng: Callable[[], float] | None = None) -> None:
        self.name = name
        self.initial_s = initial_s
        self.cap_s = cap_s
        self._clock = clock
        self._rng = rng
        self._lock = threading.Lock()
        self.failures = 0  #: consecutive failures of the current outage (0: available)
        self.outages = 0  #: outages seen so far
        self._down_since: float | None = None

    @property
    def down(self) -> bool:
        with self._lock:
            return self.failures > 0

    def failed(self, error: BaseException | str, **context: Any) -> float:
        """Record one failed try; returns the seconds to wait before the next one."""
        with self._lock:
            self.failures += 1
            failures = self.failures
            if failures == 1:
                self._down_since = self._clock()
                self.outages += 1
        detail = {"error": str(error)[:500],
                  "error_type": type(error).__name__ if isinstance(error, BaseException) else None}
        if failures == 1:
            log.warning(f"{self.name}.unavailable", **detail, **context,
                        note="retrying with backoff; logged again when it recovers")
        else:
            log.debug(f"{self.name}.still_unavailable", failures=failures, **detail)
        kwargs: dict[str, Any] = {"initial_s": self.initial_s, "cap_s": self.cap_s}
        if self._rng is not None:
            kwargs["rng"] = self._rng
        return max(MIN_WAIT_S, compute_backoff(failures, **kwargs))

    def succeeded(self) -> None:
        """Record a success; logs the recovery once if an outage was in progress."""
        with self._lock:
            failures, since = self.failures, self._down_since
            self.failures = 0
            self._down_since = None
        if failures:
            log.info(f"{self.name}.recovered", failed_tries=failures,
                     down_s=round(self._clock() - (since or self._clock()), 1))


class PollGuard:
    """The outermost-loop policy the consumer and the drainer share.

    An SQS failure waits on the queue's outage backoff (logged once per state change); anything
    else is logged with its traceback (``<loop>.poll_failed``) and backed off. Either way the loop
    still counts as turning (*touch*), so the watchdog only stops for a loop that is stuck.
    """

    def __init__(self, loop: str, *, sqs_state: Availability, queue_url: str,
                 touch: Callable[[], None]) -> None:
        self.loop = loop
        self.sqs_state = sqs_state
        self.queue_url = queue_url
        self.touch = touch
        self.failed_event = f"{loop}.poll_failed"
        self.failures = 0

    def poll(self, poll_once: Callable[[], int], stop: threading.Event) -> int | None:
        """Run one poll; its count, or None after a failure (the backoff is already waited)."""
        try:
            count = poll_once()
        except (BotoCoreError, ClientError) as exc:  # SQS unreachable or failing
            self.touch()
            stop.wait(self.sqs_state.failed(exc, queue_url=self.queue_url))
            return None
        except Exception:  # outermost loop: log with traceback, back off, carry on
            self.failures += 1
            log.exception(self.failed_event, consecutive=self.failures)
            self.touch()
            stop.wait(compute_backoff(self.failures))
            return None
        self.failures = 0
        return count
