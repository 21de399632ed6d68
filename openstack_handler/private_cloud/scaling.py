"""How many servers the private pool should have: target tracking on backlog per server.

AWS's advice for scaling on an SQS queue, applied to our pool: the metric is the backlog per
server (messages visible + in flight on the input queue, plus what the daemons and the web tier
hold waiting, divided by the servers that take work), and its target is the *acceptable backlog
per server* = acceptable wait ÷ seconds one server takes per message (measured on the servers;
a configured guess until one has reported). The desired size is the backlog divided by that
target, rounded up and clamped to ``[min_vms, max_vms]``.

Out at once, in steps of at most ``max_step_out`` servers per decision (a burst of backlog does
not order nineteen servers on one sample; Lambda bursting covers the wait). In only after the
desired size has stayed below the current one for ``scale_in_cooldown_s``, and then to the
target at once (each removal is a drain, so going fast loses nothing). Pure apart from the clock
it is given: the controller feeds it one :class:`Observation` per interval and acts on the
:class:`Decision`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class ScalingPolicy:
    """The controller's settings for the decision (see the module docstring)."""

    min_vms: int = 0
    max_vms: int = 19
    #: how long a message may wait for a private server before the backlog counts as too big
    acceptable_wait_s: float = 30.0
    #: seconds per message per server until the servers report their own
    assumed_s_per_message: float = 1.0
    max_step_out: int = 4
    scale_in_cooldown_s: float = 60.0

    def __post_init__(self) -> None:
        if not 0 <= self.min_vms <= self.max_vms:
            raise ValueError(f"need 0 <= min_vms <= max_vms, not {self.min_vms}, {self.max_vms}")
        if self.acceptable_wait_s <= 0 or self.assumed_s_per_message <= 0:
            raise ValueError("acceptable_wait_s and assumed_s_per_message must be positive")
        if self.max_step_out < 1 or self.scale_in_cooldown_s < 0:
            raise ValueError("max_step_out must be >= 1 and scale_in_cooldown_s >= 0")


@dataclass(frozen=True)
class Observation:
    """One sample of the backlog and the pool."""

    #: messages waiting for a private server: the input queue's visible + in-flight ones and
    #: what the daemons / the web tier report holding
    backlog: int
    #: the servers the pool has and keeps (active or booting, not draining)
    size: int
    #: the servers' measured seconds per message per server (None: none has reported yet)
    s_per_message: float | None = None


@dataclass(frozen=True)
class Decision:
    """What the controller should do: grow to, or shrink toward, *desired*."""

    desired: int
    #: the size the backlog asks for before stepping and cooldown
    target: int
    #: acceptable backlog per server used for the target
    per_server: int
    #: none, out, in, or bounds (the size was outside [min_vms, max_vms])
    change: str
    reason: str


class Scaler:
    """Target tracking with a scale-in cooldown; its only state is since when the pool has
    been bigger than the backlog asks."""

    def __init__(self, policy: ScalingPolicy) -> None:
        self.policy = policy
        self._below_since: float | None = None

    def acceptable_backlog_per_server(self, s_per_message: float | None) -> int:
        seconds = s_per_message if s_per_message and s_per_message > 0 else \
            self.policy.assumed_s_per_message
        return max(1, math.floor(self.policy.acceptable_wait_s / seconds))

    def decide(self, observation: Observation, *, now: float) -> Decision:
        policy = self.policy
        per_server = self.acceptable_backlog_per_server(observation.s_per_message)
        wanted = math.ceil(max(0, observation.backlog) / per_server)
        target = min(policy.max_vms, max(policy.min_vms, wanted))
        size = observation.size

        def decision(desired: int, reason: str) -> Decision:
            change = reason.split(":", 1)[0]
            return Decision(desired=desired, target=target, per_server=per_server,
                            change="none" if change == "hold" else change, reason=reason)

        basis = f"backlog {observation.backlog}, {per_server} per server"
        if size < policy.min_vms or size > policy.max_vms:
            self._below_since = None
            bounded = min(policy.max_vms, max(policy.min_vms, size))
            return decision(bounded, f"bounds: {size} outside [{policy.min_vms}, "
                                     f"{policy.max_vms}]")
        if target > size:
            self._below_since = None
            desired = min(target, size + policy.max_step_out)
            return decision(desired, f"out: {basis} asks for {target}")
        if target == size:
            self._below_since = None
            return decision(size, f"hold: {basis} asks for {size}")
        if self._below_since is None:
            self._below_since = now
        waited = now - self._below_since
        if waited < policy.scale_in_cooldown_s:
            return decision(size, f"hold: {basis} asks for {target}, in after "
                                  f"{policy.scale_in_cooldown_s - waited:.0f} s more below")
        self._below_since = None  # a later scale-in waits a full cooldown again
        return decision(target, f"in: {basis} asks for {target} (below for {waited:.0f} s)")
