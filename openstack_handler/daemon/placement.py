"""Where each video runs: ordered targets with slots, and the burst rule.

A target is one place to invoke the function (our private Lambda service on the VMs, AWS Lambda):
an invoker, a number of slots (invocations in flight at most) and its up/down state. The policy,
for the message that has waited longest:

- the first target that is up takes it while it has a free slot;
- a later target takes it only when every earlier one that is up is full *and* the message has
  waited ``burst_after_s`` (0: at once; None: never) — bursting rents capacity, so it waits for
  the capacity already paid for first;
- a target that is down (refused, 5xx, throttled, timing out) is out of the rotation: the next
  one up takes its place at once (failover is not bursting). It is probed with
  ``Invoke(InvocationType=DryRun)``, which touches no message, after its backoff and once nothing
  of its own is in flight; when a dry run answers it gets one invocation (a dry run does not see
  throttling) and its full slots once that invocation succeeds.

A message's wait counts from when it was sent to the queue (SQS's ``SentTimestamp``), or from its
receive if that is later by our clock. One target (the default: the settings' function on the
settings' Lambda endpoint, ``concurrency`` slots) is the daemon's behaviour before targets.

Thread-safe: the consumer's poll thread and its invocation threads share one Placement.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import boto3

from openstack_handler.daemon.availability import Availability
from openstack_handler.daemon.aws_clients import Endpoint, build_client
from openstack_handler.daemon.invoker import LambdaInvoker, lambda_client_config
from openstack_handler.daemon.pool_target import PoolInvoker, PoolMember, PoolRefresher
from openstack_handler.daemon.settings import DEFAULT_TARGET, Settings, TargetSettings


@dataclass
class TargetCounts:
    """What one target did in this process (the state DB keeps the durable totals)."""

    invocations: int = 0
    failures: int = 0
    probes: int = 0


class Target:
    """One place to run the function; its counters are guarded by the Placement's lock."""

    def __init__(self, *, name: str, invoker: LambdaInvoker | PoolInvoker, slots: int,
                 availability: Availability, max_slots: int | None = None) -> None:
        self.name = name
        self.invoker = invoker
        #: the slots it has now (a pool target's change with its servers), and at most
        self.slots = slots
        self.max_slots = slots if max_slots is None else max_slots
        self.availability = availability
        self.in_flight = 0
        #: monotonic time before which a down target is not probed
        self.retry_at = 0.0
        #: a dry run answered since the target went down: it may run one invocation
        self.probe_answered = False
        self.counts = TargetCounts()

    @property
    def usable(self) -> bool:
        """In the rotation: up, or down with a dry run answered (one canary invocation)."""
        return not self.availability.down or self.probe_answered

    @property
    def free(self) -> int:
        if not self.availability.down:
            return max(0, self.slots - self.in_flight)
        return max(0, 1 - self.in_flight) if self.probe_answered else 0

    def __repr__(self) -> str:
        return (f"Target({self.name!r}, slots={self.slots}, in_flight={self.in_flight}, "
                f"down={self.availability.down})")


class Placement:
    """The targets in order and the burst rule; see the module docstring."""

    def __init__(self, targets: Sequence[Target], *, burst_after_s: float | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if not targets:
            raise ValueError("a placement needs at least one target")
        self.targets = tuple(targets)
        self.burst_after_s = burst_after_s
        self._clock = clock
        self._lock = threading.Lock()

    @property
    def total_slots(self) -> int:
        """Invocations in flight at most (the consumer's threads)."""
        return sum(t.max_slots for t in self.targets)

    def set_slots(self, target: Target, slots: int) -> None:
        """A pool target's servers changed: it has *slots* now."""
        with self._lock:
            target.slots = max(0, min(slots, target.max_slots))

    @property
    def all_down(self) -> bool:
        with self._lock:
            return not any(t.usable for t in self.targets)

    def room(self, waiting: int) -> int:
        """How many more messages the consumer may receive now, *waiting* being those it holds
        unstarted: the free slots of the first usable target, plus the later ones' when bursting
        is allowed at all (their messages wait here for ``burst_after_s``)."""
        with self._lock:
            usable = [t for t in self.targets if t.usable]
            if not usable:
                return 0
            free = usable[0].free
            if self.burst_after_s is not None:
                free += sum(t.free for t in usable[1:])
            return max(0, free - waiting)

    def take(self, waited_s: float) -> Target | None:
        """The target for a message that has waited *waited_s*, its slot taken; None: it waits."""
        with self._lock:
            usable = [t for t in self.targets if t.usable]
            if not usable:
                return None
            chosen = usable[0] if usable[0].free > 0 else None
            if chosen is None and self.burst_after_s is not None \
                    and waited_s >= self.burst_after_s:
                chosen = next((t for t in usable[1:] if t.free > 0), None)
            if chosen is not None:
                chosen.in_flight += 1
                chosen.counts.invocations += 1
            return chosen

    def burst_in(self, waited_s: float) -> float | None:
        """Seconds until a message that has waited *waited_s* may burst (None: never)."""
        if self.burst_after_s is None:
            return None
        return max(0.0, self.burst_after_s - waited_s)

    def release(self, target: Target, *, failed: bool = False) -> None:
        with self._lock:
            target.in_flight -= 1
            if failed:
                target.counts.failures += 1

    def mark_down(self, target: Target, error: BaseException, **context: object) -> float:
        """The target failed to answer: out of the rotation until a dry run answers. Returns
        the backoff before its next probe."""
        delay = target.availability.failed(error, target=target.name,
                                           function=target.invoker.function_name, **context)
        with self._lock:
            target.probe_answered = False
            target.retry_at = self._clock() + delay
        return delay

    def mark_up(self, target: Target) -> None:
        """An invocation got an answer from the function (a success or a function error)."""
        with self._lock:
            target.probe_answered = False
        target.availability.succeeded()

    def due_probes(self) -> list[Target]:
        """Down targets whose backoff is over and that have nothing in flight."""
        now = self._clock()
        with self._lock:
            return [t for t in self.targets
                    if t.availability.down and not t.probe_answered and t.in_flight == 0
                    and now >= t.retry_at]

    def next_probe_in(self) -> float:
        """Seconds until the soonest probe of a down target (0 when one is due)."""
        now = self._clock()
        with self._lock:
            waits = [t.retry_at - now for t in self.targets
                     if t.availability.down and not t.probe_answered]
        return max(0.0, min(waits)) if waits else 0.0

    def probed(self, target: Target, error: BaseException | None) -> None:
        """Record a dry run's outcome (*error* None: it answered)."""
        with self._lock:
            target.counts.probes += 1
        if error is None:
            with self._lock:
                target.probe_answered = True
            return
        self.mark_down(target, error, probe="DryRun")

    def other_usable(self, target: Target) -> bool:
        """Whether a target other than *target* is in the rotation (its work can move there)."""
        with self._lock:
            return any(t.usable for t in self.targets if t is not target)

    def snapshot(self) -> list[dict[str, object]]:
        """Per target, for the STATUS line and logs."""
        with self._lock:
            return [{"name": t.name, "slots": t.slots, "in_flight": t.in_flight,
                     "down": t.availability.down, "invocations": t.counts.invocations,
                     "failures": t.counts.failures, "probes": t.counts.probes}
                    for t in self.targets]


#: where a pool target's servers come from: the target's settings → a call listing them now.
Discovery = Callable[[TargetSettings], Callable[[], Sequence[PoolMember]]]


def build_placement(settings: Settings, *, session: Any, discovery: Discovery | None = None
                    ) -> tuple[Placement, dict[str, Endpoint], list[PoolRefresher]]:
    """The settings' targets, each with its own Lambda client (its endpoint, sockets for its
    slots), the endpoint each fixed one calls, and a refresher per pool target (not started)."""
    targets = []
    endpoints: dict[str, Endpoint] = {}
    refreshers: list[PoolRefresher] = []
    specs = settings.placement_targets
    # One target waits out a throttle with the invoker's retries; among several, a target that
    # does not answer after one retry is taken out and its work moves to the next.
    attempts = settings.invoke_max_attempts if len(specs) == 1 else \
        min(2, settings.invoke_max_attempts)
    pools: list[tuple[Target, PoolInvoker]] = []
    for spec in specs:
        own = boto3.session.Session(profile_name=spec.profile, region_name=settings.region) \
            if spec.profile else session
        config = lambda_client_config(function_timeout_s=settings.function_timeout_s,
                                      concurrency=spec.slots)

        def invoker_on(client: Any, spec: TargetSettings = spec) -> LambdaInvoker:
            return LambdaInvoker(client=client, function_name=spec.function_name or "",
                                 max_attempts=attempts,
                                 backoff_initial_s=settings.invoke_backoff_initial_s,
                                 backoff_max_s=settings.invoke_backoff_max_s)

        # the lone default target keeps the "lambda.unavailable" events it always logged
        availability = Availability("lambda" if spec.name == DEFAULT_TARGET else
                                    f"target_{spec.name}", cap_s=settings.outage_backoff_max_s)
        if spec.pool:
            if discovery is None:
                raise ValueError(f"target {spec.name} is a pool: a discovery is needed")
            pool_invoker = PoolInvoker(
                function_name=spec.function_name or "", slots_per_member=spec.slots,
                make_invoker=lambda url, own=own, config=config, invoker_on=invoker_on:
                    invoker_on(own.client("lambda", endpoint_url=url, config=config)))
            target = Target(name=spec.name, invoker=pool_invoker, slots=0,
                            availability=availability, max_slots=spec.max_slots)
            pools.append((target, pool_invoker))
            refreshers.append(PoolRefresher(pool_invoker, discover=discovery(spec),
                                            refresh_s=settings.pool_refresh_s, name=spec.name))
        else:
            client, endpoints[spec.name] = build_client(settings, "lambda", session=own,
                                                        target=spec, config=config)
            target = Target(name=spec.name, invoker=invoker_on(client), slots=spec.slots,
                            availability=availability)
        targets.append(target)
    placement = Placement(targets, burst_after_s=settings.burst_after_s)
    for target, pool_invoker in pools:
        pool_invoker.bind(lambda slots, target=target: placement.set_slots(target, slots))
    return placement, endpoints, refreshers
