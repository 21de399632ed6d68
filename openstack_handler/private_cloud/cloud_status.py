"""The daemon's heartbeat in its own server's metadata, so ``openstack server show`` tells an
operator how the handler is doing, and ``openstack-handler status --cloud NAME`` lists every
handler server with the age of its last heartbeat.

A daemon thread publishes ``handler_*`` keys (``state``, ``version``, ``processed``, ``failed``,
``last_error``, ``updated_at``, ``interval_s``) every ``cloud_heartbeat_interval_s`` through
openstacksdk, authenticated by the ``clouds.yaml`` entry ``cloud_name`` (an application credential,
found on openstacksdk's normal search path). It is off the work's path: a failure (cloud
unreachable, authentication refused, server unknown) is logged once per change of problem and the
next try waits a full interval; nothing is ever raised into the consumer or the drainer. On stop it
publishes ``state=stopped``, bounded by a short timeout.

A replica (one of several daemons on the server, e.g. ``handler@2``) publishes
``handler_<replica>_*`` instead, so each process's state stays its own; their ``processed`` and
``failed`` are the server's totals (the replicas share one state DB).

openstacksdk is the optional ``openstack`` extra: it is imported only when a connection is made.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog

from openstack_handler.private_cloud.pool import POOL_KEY

log = structlog.get_logger(__name__)

METADATA_PREFIX = "handler_"
#: a heartbeat's ``state`` key: ``handler_state``, or ``handler_<replica>_state``.
_STATE_KEY = re.compile(re.escape(METADATA_PREFIX) + r"(?:([A-Za-z0-9-]+)_)?state")
#: Nova's limit on a metadata value's length.
MAX_VALUE_CHARS = 255
#: how long stop() waits for the final ``state=stopped`` publish.
FINAL_PUBLISH_TIMEOUT_S = 5.0
_TIMESTAMP_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


@dataclass(frozen=True)
class Heartbeat:
    """What one publish says about the daemon."""

    state: str  #: starting, running, degraded, stopping, stopped
    version: str
    processed: int
    failed: int
    last_error: str | None
    updated_at: datetime
    interval_s: float
    #: where its invocations ran, "private=120,aws=14" (empty: one target, nothing to split)
    split: str = ""

    def as_metadata(self, prefix: str = METADATA_PREFIX) -> dict[str, str]:
        """Nova server metadata: string values of at most 255 characters."""
        values = {"state": self.state, "version": self.version,
                  "processed": str(self.processed), "failed": str(self.failed),
                  "last_error": _one_line(self.last_error or ""),
                  "updated_at": self.updated_at.astimezone(UTC).strftime(_TIMESTAMP_FORMAT),
                  "interval_s": f"{self.interval_s:g}"}
        if self.split:
            values["split"] = self.split
        return {prefix + key: _truncate(value) for key, value in values.items()}


def metadata_prefix(replica: str = "") -> str:
    """The metadata key prefix of a daemon: ``handler_``, or ``handler_<replica>_``."""
    return f"{METADATA_PREFIX}{replica}_" if replica else METADATA_PREFIX


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _truncate(value: str) -> str:
    return value if len(value) <= MAX_VALUE_CHARS else value[:MAX_VALUE_CHARS - 1] + "…"


def describe_problem(exc: BaseException) -> str:
    """A short, stable name for what went wrong, so each kind of problem is logged once."""
    from keystoneauth1 import exceptions as ksa
    from openstack import exceptions as sdk

    if isinstance(exc, ksa.ConnectFailure | ksa.ConnectTimeout | ksa.DiscoveryFailure):
        return "cloud_unreachable"
    if isinstance(exc, ksa.Unauthorized | ksa.MissingAuthPlugin):
        return "auth_failed"
    if isinstance(exc, sdk.NotFoundException):
        return "server_not_found"
    if isinstance(exc, sdk.ForbiddenException):
        return "forbidden"
    if isinstance(exc, sdk.HttpException) and exc.status_code == 401:
        return "auth_failed"
    if isinstance(exc, sdk.ConfigException):
        return "cloud_not_configured"
    return f"error:{type(exc).__name__}"


def connect(cloud_name: str, *, api_timeout_s: float = 10.0) -> Any:
    """An openstacksdk connection for the ``clouds.yaml`` entry *cloud_name* (lazily imported)."""
    import openstack

    # connect_retries: keystoneauth would otherwise retry a refused connection for a while.
    return openstack.connect(cloud=cloud_name, api_timeout=api_timeout_s, connect_retries=0,
                             status_code_retries=0)


class CloudStatusPublisher:
    """Publishes :class:`Heartbeat` s to one server's metadata from a daemon thread."""

    def __init__(self, *, connect: Callable[[], Any], server: str,
                 snapshot: Callable[[], Heartbeat], interval_s: float = 60.0,
                 prefix: str = METADATA_PREFIX) -> None:
        self._connect = connect
        self.server = server
        self._snapshot = snapshot
        self.interval_s = interval_s
        self.prefix = prefix
        self._conn: Any = None
        self._server_id: str | None = None
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._lock = threading.Lock()  # one publish at a time (the loop and the final one)
        self._thread: threading.Thread | None = None
        self.problem: str | None = None  #: the current problem's name; None while publishing works
        self.published = 0  #: successful publishes

    def publish_once(self, heartbeat: Heartbeat | None = None) -> bool:
        """One publish; False (logged once per kind of problem) when it failed."""
        from keystoneauth1.exceptions import ClientException
        from openstack.exceptions import SDKException

        with self._lock:
            try:
                heartbeat = heartbeat or self._snapshot()
                if self._conn is None:
                    self._conn = self._connect()
                if self._server_id is None:
                    self._server_id = self._conn.compute.find_server(
                        self.server, ignore_missing=False, details=False).id
                self._conn.compute.set_server_metadata(
                    self._server_id, **heartbeat.as_metadata(self.prefix))
            except (SDKException, ClientException) as exc:
                problem = describe_problem(exc)
                if problem == "server_not_found":
                    self._server_id = None  # renamed or rebuilt: look it up again next time
                self._failed(problem, exc)
                return False
            self.published += 1
            if self.problem is not None:
                log.info("cloud_status.recovered", server=self.server, after=self.problem)
                self.problem = None
            return True

    def _failed(self, problem: str, exc: BaseException) -> None:
        if problem != self.problem:
            log.warning("cloud_status.unavailable", server=self.server, problem=problem,
                        error=str(exc)[:300], error_type=type(exc).__name__,
                        note="the handler keeps working; retried every interval, "
                             "logged again when the problem changes")
        self.problem = problem

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="cloud-status", daemon=True)
        self._thread.start()

    def poke(self) -> None:
        """Publish now rather than at the end of the interval (the state just changed)."""
        self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()
            try:
                self.publish_once()
            except Exception as exc:  # this thread's outermost loop: never let it die
                if self.problem != f"error:{type(exc).__name__}":
                    log.exception("cloud_status.publish_failed", server=self.server)
                self.problem = f"error:{type(exc).__name__}"
            self._wake.wait(self.interval_s)

    def stop(self, final: Heartbeat | None = None, *,
             timeout_s: float = FINAL_PUBLISH_TIMEOUT_S) -> bool:
        """Stop the thread; then publish *final* (e.g. ``state=stopped``) within *timeout_s*.

        Returns whether the final heartbeat was published in time. A cloud that hangs costs the
        shutdown at most *timeout_s*: the publish goes on in a daemon thread nobody waits for.
        """
        self._stop.set()
        self._wake.set()
        if final is None:
            return False
        done = threading.Event()
        outcome: list[bool] = []

        def publish_final() -> None:
            try:
                outcome.append(self.publish_once(final))
            except Exception:  # a thread's outermost boundary
                log.exception("cloud_status.publish_failed", server=self.server)
            finally:
                done.set()

        threading.Thread(target=publish_final, name="cloud-status-final", daemon=True).start()
        if not done.wait(timeout_s):
            log.warning("cloud_status.final_publish_timed_out", server=self.server,
                        timeout_s=timeout_s)
            return False
        return bool(outcome and outcome[0])


# -- reading it back (``openstack-handler status --cloud NAME``) -----------------------------

@dataclass(frozen=True)
class HandlerServer:
    """One daemon's heartbeat on a server (a server with replicas gives one per replica)."""

    name: str
    id: str
    status: str  #: Nova's server status (ACTIVE, SHUTOFF, ...)
    metadata: Mapping[str, str]
    replica: str = ""

    def value(self, key: str) -> str | None:
        return self.metadata.get(metadata_prefix(self.replica) + key)

    def age_s(self, now: datetime) -> float | None:
        stamp = self.value("updated_at")
        if not stamp:
            return None
        try:
            at = datetime.strptime(stamp, _TIMESTAMP_FORMAT).replace(tzinfo=UTC)
        except ValueError:
            return None
        return max(0.0, (now - at).total_seconds())

    def is_stale(self, now: datetime) -> bool:
        """No heartbeat for three intervals while the handler claims to be alive."""
        age = self.age_s(now)
        try:
            interval = float(self.value("interval_s") or 60)
        except ValueError:
            interval = 60.0
        return self.value("state") != "stopped" and (age is None or age > 3 * interval)


def handler_servers(conn: Any) -> list[HandlerServer]:
    """Every daemon heartbeat in the project's server metadata, by server name and replica."""
    found = []
    for server in conn.compute.servers(details=True):
        metadata = dict(server.metadata or {})
        if POOL_KEY in metadata:  # a pool server: its agent's keys, shown by render_pool
            continue
        for key in metadata:
            if (match := _STATE_KEY.fullmatch(key)) is not None:
                found.append(HandlerServer(name=server.name or "", id=server.id,
                                           status=server.status or "", metadata=metadata,
                                           replica=match.group(1) or ""))
    return sorted(found, key=lambda s: (s.name, s.id, _replica_order(s.replica)))


def _replica_order(replica: str) -> tuple[int, str]:
    """handler@2 before handler@10."""
    return (int(replica), "") if replica.isdigit() else (1 << 62, replica)


def _age_text(age: float | None) -> str:
    if age is None:
        return "-"
    if age < 120:
        return f"{age:.0f} s"
    if age < 7200:
        return f"{age / 60:.0f} min"
    return f"{age / 3600:.1f} h"


def render_handler_servers(servers: Iterable[HandlerServer], *, cloud: str,
                           now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> str:
    """The servers as a plain-text table (stale heartbeats are marked)."""
    servers = list(servers)
    if not servers:
        return f"cloud {cloud}: no server carries handler metadata ({METADATA_PREFIX}state)\n"
    at = now()
    rows = [("SERVER", "ID", "NOVA", "REPLICA", "HANDLER", "VERSION", "PROCESSED", "FAILED",
             "SPLIT", "HEARTBEAT", "LAST ERROR")]
    for s in servers:
        state = s.value("state") or "?"
        if s.is_stale(at):
            state += " (stale)"
        rows.append((s.name, s.id, s.status, s.replica or "-", state, s.value("version") or "-",
                     s.value("processed") or "-", s.value("failed") or "-",
                     s.value("split") or "-",
                     f"{_age_text(s.age_s(at))} ago" if s.age_s(at) is not None else "-",
                     s.value("last_error") or "-"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    lines = ["  ".join([c.ljust(w) for c, w in zip(r[:-1], widths, strict=True)] + [r[-1]])
             .rstrip() for r in rows]
    count = len({s.id for s in servers})
    return f"cloud {cloud}: {count} handler server(s)\n" + "\n".join(lines) + "\n"


def heartbeat_from(*, state: str, version: str, counters: Mapping[str, int],
                   last_error: str | None, interval_s: float,
                   clock: Callable[[], float] = time.time) -> Heartbeat:
    """A heartbeat from the state DB's counters (videos_ok / videos_failed, and each target's
    ``target.<name>.invocations`` for the split) and last error."""
    runs = {name[len("target."):-len(".invocations")]: int(value)
            for name, value in counters.items()
            if name.startswith("target.") and name.endswith(".invocations")}
    split = ",".join(f"{name}={count}" for name, count in runs.items()) if len(runs) > 1 else ""
    return Heartbeat(state=state, version=version, processed=int(counters.get("videos_ok", 0)),
                     failed=int(counters.get("videos_failed", 0)), last_error=last_error,
                     updated_at=datetime.fromtimestamp(clock(), UTC), interval_s=interval_s,
                     split=split)
