"""The pool agent: the server's side of the pool's heartbeat and drain handshake.

It runs on each pool server beside the private function service and, every ``interval_s``,
reads that service's ``/health`` (busy workers, invocations, their total duration) and publishes
into its own server's metadata:

- ``handler_endpoint``: where the daemons invoke this server's function service;
- ``handler_updated_at``: the heartbeat (a server that never heartbeats is replaced);
- ``handler_in_flight``: invocations running now;
- ``handler_s_per_message``: seconds one message takes this server (mean duration over the
  invocations since the last beat, divided by the function's slots) — the autoscaler's measure
  of what a server does;
- ``handler_state``: ``serving``, ``draining`` or ``drained``.

Drain: once the controller has set ``handler_drain=requested``, the daemons stop sending here
(they read the pool every few seconds). The agent reports ``drained`` when nothing has run for
``drain_quiet_s`` since it first saw the request *and* nothing is in flight, so an invocation a
daemon sent just before it saw the drain cannot be cut off by the removal. The controller then
removes exactly this server.

A failed publish (cloud unreachable, server unknown) is logged once per change of problem; the
next beat tries again. The agent never touches the function service's work.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog

from openstack_handler.private_cloud.identity import NOVA_METADATA_URL
from openstack_handler.private_cloud.pool import (
    DRAIN_KEY,
    DRAIN_REQUESTED,
    DRAINED,
    ENDPOINT_KEY,
    HEARTBEAT_KEY,
    IN_FLIGHT_KEY,
    SECONDS_PER_MESSAGE_KEY,
    STATE_KEY,
    timestamp,
)

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class AgentSettings:
    """What one pool agent needs (``openstack-handler pool-agent --config FILE``)."""

    #: the clouds.yaml entry whose credential may set this server's metadata
    cloud_name: str
    #: the function service's URL as the daemons reach it
    endpoint_url: str
    #: this server's id; "" (the default on a guest): its uuid from Nova's metadata service
    server_id: str = ""
    metadata_url: str = NOVA_METADATA_URL
    #: the same service as the agent reaches it (loopback on a guest); default: endpoint_url
    service_url: str = ""
    #: the function whose work counts (its slots divide the mean duration)
    function_name: str = "face-recognition"
    interval_s: float = 5.0
    #: quiet time after a drain request before ``drained`` may be reported: longer than the
    #: daemons' pool refresh interval
    drain_quiet_s: float = 15.0

    def __post_init__(self) -> None:
        for name in ("cloud_name", "endpoint_url"):
            if not getattr(self, name):
                raise ValueError(f"{name} is required")
        if not self.endpoint_url.startswith(("http://", "https://")):
            raise ValueError(f"endpoint_url must be an http(s) URL, not {self.endpoint_url!r}")
        if not 0.5 <= self.interval_s <= 600 or self.drain_quiet_s < 0:
            raise ValueError("interval_s must be 0.5..600 and drain_quiet_s >= 0")

    @property
    def health_url(self) -> str:
        return (self.service_url or self.endpoint_url).rstrip("/") + "/health"


@dataclass(frozen=True)
class Usage:
    """One reading of the function service."""

    in_flight: int
    invocations: int
    duration_ms_total: float
    slots: int


def read_usage(health_url: str, function_name: str, *, timeout_s: float = 3.0) -> Usage:
    """The function's busy workers and totals from the service's ``/health``."""
    with urllib.request.urlopen(health_url, timeout=timeout_s) as response:
        document = json.loads(response.read(1 << 20))
    stats = document.get("functions", {}).get(function_name)
    if stats is None:
        raise LookupError(f"the service at {health_url} has no function {function_name!r}")
    return Usage(in_flight=int(stats.get("busy", 0)),
                 invocations=int(stats.get("invocations", 0)),
                 duration_ms_total=float(stats.get("duration_ms_total", 0)),
                 slots=max(1, int(stats.get("concurrency", 1))))


class PoolAgent:
    """See the module docstring. ``beat()`` is one round; ``run()`` loops until ``stop()``."""

    def __init__(self, settings: AgentSettings, *, connect: Callable[[], Any],
                 usage: Callable[[], Usage] | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.settings = settings
        self._connect = connect
        self._usage = usage or (lambda: read_usage(settings.health_url, settings.function_name))
        self._clock = clock
        self._now = now
        self._conn: Any = None
        self._last: Usage | None = None
        self._s_per_message: float | None = None
        self._drain_seen_at: float | None = None
        self._quiet_since: float | None = None
        self._problem: str | None = None
        self._stop = threading.Event()

    def beat(self) -> dict[str, str] | None:
        """Read the service and the drain request, publish; returns what was published."""
        settings = self.settings
        try:
            usage = self._usage()
        except (OSError, ValueError, LookupError) as exc:  # URLError is an OSError
            self._report(f"function service: {type(exc).__name__}: {exc}"[:200])
            return None  # no heartbeat: a service that does not answer is not serving
        try:
            conn = self._conn = self._conn or self._connect()
            server = conn.compute.get_server(settings.server_id)
            values = self._values(usage, dict(server.metadata or {}))
            conn.compute.set_server_metadata(settings.server_id, **values)
        except Exception as exc:  # noqa: BLE001 - openstacksdk/keystoneauth raise many kinds
            self._conn = None
            self._report(f"cloud: {type(exc).__name__}: {exc}"[:200])
            return None
        if self._problem is not None:
            log.info("pool_agent.recovered", server=settings.server_id, was=self._problem)
            self._problem = None
        return values

    def _values(self, usage: Usage, metadata: Mapping[str, str]) -> dict[str, str]:
        now = self._clock()
        previous, self._last = self._last, usage
        if previous is not None and usage.invocations > previous.invocations:
            count = usage.invocations - previous.invocations
            mean_s = (usage.duration_ms_total - previous.duration_ms_total) / count / 1000
            self._s_per_message = max(0.001, mean_s / usage.slots)
        # quiet: nothing running now, and nothing ran since (an invocation that began and ended
        # between two beats shows in the count)
        ran = previous is None or usage.invocations != previous.invocations
        if usage.in_flight:
            self._quiet_since = None
        elif ran or self._quiet_since is None:
            self._quiet_since = now
        state = "serving"
        if metadata.get(DRAIN_KEY) == DRAIN_REQUESTED:
            if self._drain_seen_at is None:
                self._drain_seen_at = now
                log.info("pool_agent.drain_requested", server=self.settings.server_id,
                         in_flight=usage.in_flight)
            quiet_for = now - max(self._drain_seen_at, self._quiet_since or now)
            state = "drained" if (usage.in_flight == 0 and self._quiet_since is not None
                                  and quiet_for >= self.settings.drain_quiet_s) else "draining"
            if state == DRAINED and metadata.get(STATE_KEY) != DRAINED:
                log.info("pool_agent.drained", server=self.settings.server_id,
                         invocations=usage.invocations)
        else:
            self._drain_seen_at = None
        values = {ENDPOINT_KEY: self.settings.endpoint_url,
                  HEARTBEAT_KEY: timestamp(self._now()), IN_FLIGHT_KEY: str(usage.in_flight),
                  STATE_KEY: state}
        if self._s_per_message is not None:
            values[SECONDS_PER_MESSAGE_KEY] = f"{self._s_per_message:.3f}"
        return values

    def _report(self, problem: str) -> None:
        if problem != self._problem:
            log.warning("pool_agent.unavailable", server=self.settings.server_id,
                        problem=problem)
            self._problem = problem

    def run(self, *, on_step: Callable[[object], None] | None = None) -> None:
        while not self._stop.is_set():
            published = None
            try:
                published = self.beat()
            except Exception:  # the outermost loop: log and carry on
                log.exception("pool_agent.beat_failed", server=self.settings.server_id)
            if on_step is not None:
                on_step(published)
            self._stop.wait(self.settings.interval_s)

    def stop(self) -> None:
        self._stop.set()

