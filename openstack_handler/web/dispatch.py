"""The web tier's side of the daemon's placement: each request takes a slot of the first target
with one free, a later target only past the burst rule, and waits for one otherwise — in a
bounded line.

Requests that find no free slot wait in line, first come first served: only the head of the
line may take a slot, so a newcomer never passes one already waiting. A request waits at most
``wait_timeout_s``, and at most ``max_waiting`` requests wait at once: past either it is refused
with :class:`Busy` (the app answers 503 with Retry-After), never held without end. A target that does not answer (refused, 5xx, throttled) is marked down and the
request moves to the next target that is up, as the daemon's messages do; down targets are probed
with ``Invoke(InvocationType=DryRun)`` in the background. :attr:`Dispatcher.held` — requests
waiting plus running — is the web tier's share of the backlog the autoscaler sizes the pool by.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import structlog

from openstack_handler.daemon.errors import (
    FunctionFailed,
    InvokeFailed,
    InvokeInterrupted,
    InvokeUnavailable,
)
from openstack_handler.daemon.invoker import Invoked
from openstack_handler.daemon.placement import Placement, Target

log = structlog.get_logger(__name__)

#: how often a waiting request looks again without being woken (a pool's slots change, a burst
#: comes due) and how often down targets are looked at for a probe
_RECHECK_S = 0.25


def function_missing(exc: InvokeFailed) -> bool:
    """Lambda refused the call because the target has no such function (a private service
    provisioned for videos only): out of the rotation for images, like a target that is down
    (its DryRun probe fails the same way until the function is made there)."""
    return str(exc).startswith("ResourceNotFoundException")


class Busy(Exception):
    """No slot for this request within the limits: try again after *retry_after_s*."""

    def __init__(self, reason: str, *, retry_after_s: int) -> None:
        super().__init__(reason)
        self.retry_after_s = retry_after_s


@dataclass(frozen=True)
class Dispatched:
    """Where a request ran, how long it waited for its slot, and the function's answer."""

    target: str
    waited_ms: float
    invoked: Invoked


class Dispatcher:
    """Runs invocations on *placement* from the event loop; one instance per app."""

    def __init__(self, placement: Placement, *, max_waiting: int, wait_timeout_s: float) -> None:
        self.placement = placement
        self.max_waiting = max_waiting
        self.wait_timeout_s = wait_timeout_s
        self.running = 0
        self.refused = 0
        #: invocations finished (answered or failed), for the server's idle check
        self.finished = 0
        self._executor = ThreadPoolExecutor(max_workers=max(1, placement.total_slots) + 2,
                                            thread_name_prefix="invoke")
        self._changed: asyncio.Condition | None = None
        #: the waiting requests' tickets, in the order they may take a slot
        self._line: deque[int] = deque()
        self._tickets = 0
        self._prober: asyncio.Task[None] | None = None

    @property
    def waiting(self) -> int:
        """Requests in line for a slot."""
        return len(self._line)

    @property
    def held(self) -> int:
        """Requests this web tier holds: waiting for a slot or running."""
        return self.waiting + self.running

    async def start(self) -> None:
        self._changed = asyncio.Condition()
        self._prober = asyncio.create_task(self._probe_forever(), name="probe-targets")

    async def close(self) -> None:
        if self._prober is not None:
            self._prober.cancel()
            await asyncio.gather(self._prober, return_exceptions=True)
        self._executor.shutdown(wait=True, cancel_futures=True)

    def check_room(self) -> None:
        """Raise :class:`Busy` now when a request would be refused a place in line (before the
        caller spends an upload on it)."""
        if self.waiting >= self.max_waiting and self._line:
            raise self._refuse(f"{self.waiting} requests are already waiting for recognition")

    async def invoke(self, payload: Mapping[str, Any]) -> Dispatched:
        """Invoke the function for one request. Raises :class:`Busy`, or what the invoker raises
        once no other target can take the request (InvokeUnavailable, FunctionFailed, ...)."""
        arrived = time.monotonic()
        target = await self._take(arrived)
        waited_ms = (time.monotonic() - arrived) * 1000
        moves = 0
        loop = asyncio.get_running_loop()
        while True:
            self.running += 1
            running = loop.run_in_executor(self._executor, target.invoker.run, payload)
            try:
                invoked = await asyncio.shield(running)
            except asyncio.CancelledError:
                # the request was given up (the server stops): the invocation runs on in its
                # thread, and its slot is freed when it ends
                running.add_done_callback(
                    lambda _, target=target: self.placement.release(target))
                raise
            except InvokeInterrupted as exc:  # it may have run: the target is sick, no resend
                self.placement.mark_down(target, exc)
                self.placement.release(target, failed=True)
                raise
            except (InvokeUnavailable, InvokeFailed) as exc:
                if isinstance(exc, InvokeFailed) and not function_missing(exc):
                    self.placement.release(target, failed=True)
                    raise
                # unavailable, or it has no image function: the function did not run there
                self.placement.mark_down(target, exc)
                self.placement.release(target, failed=True)
                if moves >= len(self.placement.targets) - 1 or \
                        not self.placement.other_usable(target):
                    raise
                moves += 1
                log.info("web.invocation_moved", from_target=target.name, error=str(exc)[:200],
                         why="the function did not run there")
                target = await self._take(arrived, woken=True)
                continue
            except FunctionFailed:
                self.placement.mark_up(target)
                self.placement.release(target, failed=True)
                raise
            else:
                self.placement.mark_up(target)
                self.placement.release(target)
                return Dispatched(target.name, round(waited_ms, 2), invoked)
            finally:
                self.running -= 1
                self.finished += 1
                await self._notify()

    async def _take(self, arrived: float, *, woken: bool = False) -> Target:
        """A slot for a request that arrived at *arrived*, in order of arrival: only the head
        of the line may take one (a request moved off a failed target goes to the front)."""
        assert self._changed is not None, "Dispatcher.start() first"
        if not self._line or woken:
            target = self.placement.take(time.monotonic() - arrived)
            if target is not None:
                return target
        if self.waiting >= self.max_waiting and not woken:
            raise self._refuse(f"{self.waiting} requests are already waiting for recognition")
        ticket = self._tickets = self._tickets + 1
        if woken:
            self._line.appendleft(ticket)
        else:
            self._line.append(ticket)
        try:
            deadline = arrived + self.wait_timeout_s
            while True:
                waited = time.monotonic() - arrived
                if self._line[0] == ticket:
                    target = self.placement.take(waited)
                    if target is not None:
                        return target
                left = deadline - time.monotonic()
                if left <= 0:
                    raise self._refuse(f"no recognition slot within {self.wait_timeout_s:g} s")
                burst = self.placement.burst_in(waited)
                pause = min(left, _RECHECK_S, burst if burst else _RECHECK_S)
                async with self._changed:
                    try:
                        await asyncio.wait_for(self._changed.wait(), timeout=max(pause, 0.01))
                    except TimeoutError:
                        pass
        finally:
            self._line.remove(ticket)
            async with self._changed:  # the next in line may go now
                self._changed.notify_all()

    def _refuse(self, reason: str) -> Busy:
        """A refusal to raise, counted (``refused`` in /api/status)."""
        self.refused += 1
        return Busy(reason, retry_after_s=self._retry_after_s())

    def _retry_after_s(self) -> int:
        """A client's wait in seconds: the requests held per usable slot (about a second each
        at the course's pace), between 1 and 60."""
        slots = max(1, sum(t.slots for t in self.placement.targets if t.usable))
        return max(1, min(60, round(self.held / slots)))

    async def _notify(self) -> None:
        assert self._changed is not None
        async with self._changed:
            self._changed.notify_all()

    async def _probe_forever(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            for target in self.placement.due_probes():
                try:
                    await loop.run_in_executor(self._executor, target.invoker.probe)
                except (InvokeUnavailable, InvokeFailed) as exc:
                    self.placement.probed(target, exc)
                else:
                    self.placement.probed(target, None)
                    log.info("web.target_probe_answered", target=target.name)
                    await self._notify()
            await asyncio.sleep(max(_RECHECK_S, min(self.placement.next_probe_in(), 1.0)))
