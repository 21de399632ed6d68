"""A target whose places change: the private pool's servers, as the cloud lists them.

The placement sees one target (``private``, say) whose slots are ``slots`` per server that may
take work; behind it a :class:`PoolInvoker` sends each invocation to the member with the most
free slots. A :class:`PoolRefresher` thread asks the cloud for the members every
``refresh_s`` (openstack_handler.private_cloud.pool.pool_members: ACTIVE, heartbeating, not
draining), so a new server takes work without a restart and a draining one gets no more; what
runs on a member that left finishes there.

A member that cannot be reached (the function did not run) is set aside until the cloud lists it
again after ``quarantine_s``, and the invocation goes to another member with a free slot at once;
only when none is left does the placement see the target unavailable (and move the work on).
An empty pool has no slots: with a burst rule, the work goes to the next target.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import structlog

from openstack_handler.daemon.errors import InvokeUnavailable
from openstack_handler.daemon.invoker import Invoked, LambdaInvoker
from openstack_handler.daemon.settings import Settings, TargetSettings

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class PoolMember:
    """One server of the pool that may take work."""

    id: str
    name: str
    endpoint_url: str


@dataclass
class _Member:
    info: PoolMember
    invoker: LambdaInvoker
    in_flight: int = 0
    listed: bool = True  #: still listed by the cloud (False: finish what runs, take no more)
    quarantined_until: float = 0.0


class PoolInvoker:
    """The invoker of a pool target (duck-types :class:`LambdaInvoker`'s run/probe)."""

    def __init__(self, *, function_name: str, slots_per_member: int,
                 make_invoker: Callable[[str], LambdaInvoker],
                 on_capacity: Callable[[int], None] | None = None,
                 quarantine_s: float = 30.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.function_name = function_name
        self.slots_per_member = slots_per_member
        self._make_invoker = make_invoker
        self._on_capacity = on_capacity or (lambda slots: None)
        self._quarantine_s = quarantine_s
        self._clock = clock
        self._lock = threading.Lock()
        self._members: dict[str, _Member] = {}

    def bind(self, on_capacity: Callable[[int], None]) -> None:
        """Tell *on_capacity* the slots whenever they change (the placement's set_slots)."""
        self._on_capacity = on_capacity

    # -- membership ---------------------------------------------------------------------------

    def set_members(self, members: Sequence[PoolMember]) -> None:
        """The cloud's current list: new members join, missing ones stop taking work."""
        joined, left = [], []
        with self._lock:
            listed = {m.id: m for m in members}
            for member_id, member in list(self._members.items()):
                if member_id not in listed or \
                        listed[member_id].endpoint_url != member.info.endpoint_url:
                    if member.listed:
                        left.append(member.info.name)
                    member.listed = False
            for member_id, info in listed.items():
                current = self._members.get(member_id)
                if current is not None and current.listed:
                    continue
                if current is not None and current.in_flight:
                    continue  # its new endpoint joins once the old one's work is done
                self._members[member_id] = _Member(info, self._make_invoker(info.endpoint_url))
                joined.append(info.name)
            self._drop_idle_leavers()
            capacity = self._capacity()
        for name in joined:
            log.info("pool.member_joined", member=name)
        for name in left:
            log.info("pool.member_left", member=name, note="takes no new work")
        self._on_capacity(capacity)

    def members(self) -> list[dict[str, Any]]:
        with self._lock:
            return [{"id": m.info.id, "name": m.info.name, "in_flight": m.in_flight,
                     "listed": m.listed, "quarantined": m.quarantined_until > self._clock()}
                    for m in self._members.values()]

    @property
    def capacity(self) -> int:
        with self._lock:
            return self._capacity()

    def _capacity(self) -> int:
        now = self._clock()
        return self.slots_per_member * sum(
            1 for m in self._members.values() if m.listed and m.quarantined_until <= now)

    def _drop_idle_leavers(self) -> None:
        for member_id in [i for i, m in self._members.items() if not m.listed and not m.in_flight]:
            del self._members[member_id]

    # -- invoking -----------------------------------------------------------------------------

    def _take(self, tried: set[str]) -> _Member | None:
        now = self._clock()
        with self._lock:
            free = [m for m in self._members.values()
                    if m.listed and m.quarantined_until <= now and m.info.id not in tried
                    and m.in_flight < self.slots_per_member]
            if not free:
                return None
            member = min(free, key=lambda m: (m.in_flight, m.info.name))
            member.in_flight += 1
            return member

    def _give_back(self, member: _Member) -> None:
        with self._lock:
            member.in_flight -= 1
            self._drop_idle_leavers()

    def _quarantine(self, member: _Member, error: BaseException) -> None:
        with self._lock:
            member.quarantined_until = self._clock() + self._quarantine_s
            capacity = self._capacity()
        log.info("pool.member_unreachable", member=member.info.name, error=str(error)[:200],
                 quarantine_s=self._quarantine_s)
        self._on_capacity(capacity)

    def run(self, payload: Mapping[str, Any]) -> Invoked:
        """On the least busy member; on another at once if that one cannot be reached."""
        tried: set[str] = set()
        last: InvokeUnavailable | None = None
        while (member := self._take(tried)) is not None:
            tried.add(member.info.id)
            try:
                return member.invoker.run(payload)
            except InvokeUnavailable as exc:  # the function did not run there
                last = exc
                self._quarantine(member, exc)
            finally:
                self._give_back(member)
        raise last or InvokeUnavailable("no server of the pool has a free slot")

    def probe(self) -> None:
        """A dry run on one listed member (any answer will do); raises when none answers."""
        with self._lock:
            candidates = [m for m in self._members.values() if m.listed]
        if not candidates:
            raise InvokeUnavailable("the pool has no server that takes work")
        last: Exception | None = None
        for member in candidates:
            try:
                member.invoker.probe()
            except InvokeUnavailable as exc:
                last = exc
                continue
            with self._lock:
                member.quarantined_until = 0.0
                capacity = self._capacity()
            self._on_capacity(capacity)
            return
        assert last is not None
        raise last


class PoolRefresher:
    """Every *refresh_s*, the cloud's members into the invoker (a failure keeps the last list:
    a cloud API outage must not empty a working pool)."""

    def __init__(self, invoker: PoolInvoker, *, discover: Callable[[], Sequence[PoolMember]],
                 refresh_s: float, name: str) -> None:
        self.invoker = invoker
        self._discover = discover
        self._refresh_s = refresh_s
        self._name = name
        self._stop = threading.Event()
        self._problem: str | None = None
        self._thread: threading.Thread | None = None

    def refresh_once(self) -> bool:
        try:
            members = self._discover()
        except Exception as exc:  # noqa: BLE001 - openstacksdk/keystoneauth raise many kinds
            problem = f"{type(exc).__name__}: {exc}"[:200]
            if problem != self._problem:
                log.warning("pool.discovery_failed", target=self._name, error=problem,
                            note="keeping the members last listed")
                self._problem = problem
            return False
        if self._problem is not None:
            log.info("pool.discovery_recovered", target=self._name)
            self._problem = None
        self.invoker.set_members(members)
        return True

    def start(self) -> None:
        self.refresh_once()
        self._thread = threading.Thread(target=self._run, name=f"pool-{self._name}",
                                        daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._refresh_s):
            try:
                self.refresh_once()
            except Exception:  # the thread's outermost loop
                log.exception("pool.refresh_failed", target=self._name)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)


def nova_discovery(settings: Settings) -> Callable[[TargetSettings], Callable[[], list[PoolMember]]]:
    """How a pool target lists its servers: Nova through ``cloud_name``
    (:func:`openstack_handler.private_cloud.pool.serving_servers`), one connection kept until a
    call fails. The daemon and the web tier discover their pools alike."""

    def for_target(target: TargetSettings) -> Callable[[], list[PoolMember]]:
        from openstack_handler.private_cloud.cloud_status import connect
        from openstack_handler.private_cloud.pool import serving_servers

        cloud, pool = settings.cloud_name, target.pool
        assert cloud is not None and pool is not None  # the settings' validation saw to it
        timeout, stale = settings.cloud_api_timeout_s, settings.pool_stale_after_s
        connection: list[Any] = []

        def discover() -> list[PoolMember]:
            if not connection:
                connection.append(connect(cloud, api_timeout_s=timeout))
            try:
                servers = serving_servers(connection[0], pool, stale_after_s=stale)
            except Exception:
                connection.clear()
                raise
            return [PoolMember(id=s.id or "", name=s.name or s.id or "",
                               endpoint_url=s.endpoint or "") for s in servers]

        return discover

    return for_target
