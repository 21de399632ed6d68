"""The private pool as Heat keeps it: one stack whose ``OS::Heat::ResourceGroup`` holds the
servers (``ansible/roles/handler_pool/files/handler-pool.yaml``).

Heat owns the servers' lifecycle; this module only reads the pool and asks Heat for changes:

- :meth:`HeatPool.read`: the stack (its ``count`` and status), the group's members and the Nova
  servers behind them with their ``handler_*`` metadata;
- :meth:`HeatPool.resize`: a stack update that keeps the template and every other parameter
  (``PATCH``, Heat's "existing" update) and sets ``count`` and, to remove exactly the servers
  given (drained ones), ``removal_policies`` by server id;
- :meth:`HeatPool.mark_unhealthy`: Heat's mark-unhealthy on a member, so the next update
  replaces it;
- :meth:`HeatPool.set_metadata`: the drain handshake's keys on one server.

openstacksdk has no call for a PATCH update or mark-unhealthy, so those two go through its
orchestration proxy's plain HTTP methods (the same session, endpoint and auth).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog

log = structlog.get_logger(__name__)

#: the group resource in the template, and the metadata key naming a server's pool.
GROUP_RESOURCE = "servers"
POOL_KEY = "handler_pool"
#: the drain handshake: the controller sets DRAIN_KEY=requested; the server (its agent) sets
#: STATE_KEY=drained once nothing runs on it any more.
DRAIN_KEY = "handler_drain"
STATE_KEY = "handler_state"
DRAIN_REQUESTED = "requested"
DRAINED = "drained"
#: where the server's function service answers, and its last heartbeat (UTC, ISO 8601).
ENDPOINT_KEY = "handler_endpoint"
HEARTBEAT_KEY = "handler_updated_at"
IN_FLIGHT_KEY = "handler_in_flight"
SECONDS_PER_MESSAGE_KEY = "handler_s_per_message"
_TIMESTAMP_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
#: the pool's template, which the handler_pool role applies
TEMPLATE_PATH = (Path(__file__).resolve().parents[2]
                 / "ansible/roles/handler_pool/files/handler-pool.yaml")


class PoolError(Exception):
    """The pool's stack cannot be read or changed."""


def load_template(path: Path = TEMPLATE_PATH) -> dict[str, Any]:
    """A HOT template as Heat reads it: YAML without the timestamp type, so that
    ``heat_template_version: 2018-08-31`` stays the string Heat expects (not a date)."""
    import yaml

    class _HeatLoader(yaml.SafeLoader):
        pass

    _HeatLoader.yaml_implicit_resolvers = {
        first: [(tag, regexp) for tag, regexp in resolvers
                if tag != "tag:yaml.org,2002:timestamp"]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
    document = yaml.load(path.read_text(), Loader=_HeatLoader)
    if not isinstance(document, dict):
        raise PoolError(f"{path}: not a template")
    return document


@dataclass(frozen=True)
class PoolServer:
    """One member of the group and the Nova server behind it."""

    member: str  #: its name in the group ("0", "1", ...; never reused)
    id: str | None  #: the server's id (None while Heat has not created it)
    name: str | None
    status: str | None  #: Nova's (ACTIVE, BUILD, ERROR, ...); None: no server (yet)
    resource_status: str  #: Heat's (CREATE_COMPLETE, CREATE_FAILED, CHECK_FAILED, ...)
    created_at: datetime | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)

    @property
    def endpoint(self) -> str | None:
        return self.metadata.get(ENDPOINT_KEY) or None

    @property
    def drain_requested(self) -> bool:
        return self.metadata.get(DRAIN_KEY) == DRAIN_REQUESTED

    @property
    def drained(self) -> bool:
        return self.drain_requested and self.metadata.get(STATE_KEY) == DRAINED

    @property
    def in_flight(self) -> int:
        try:
            return max(0, int(self.metadata.get(IN_FLIGHT_KEY, "0")))
        except ValueError:
            return 0

    @property
    def s_per_message(self) -> float | None:
        try:
            value = float(self.metadata[SECONDS_PER_MESSAGE_KEY])
        except (KeyError, ValueError):
            return None
        return value if value > 0 else None

    @property
    def heartbeat_at(self) -> datetime | None:
        return parse_time(self.metadata.get(HEARTBEAT_KEY))

    def serving(self, *, stale_after_s: float, now: datetime) -> bool:
        """Whether it may take work: ACTIVE, with an endpoint, a heartbeat younger than
        *stale_after_s*, and no drain requested."""
        beat = self.heartbeat_at
        return (self.status == "ACTIVE" and bool(self.endpoint) and beat is not None
                and not self.drain_requested and (now - beat).total_seconds() <= stale_after_s)


@dataclass(frozen=True)
class PoolState:
    """The stack and its members, as read at one moment."""

    stack_id: str
    stack_name: str
    stack_status: str  #: e.g. CREATE_COMPLETE, UPDATE_IN_PROGRESS, UPDATE_FAILED
    status_reason: str
    count: int  #: the ``count`` parameter: the size Heat was last asked for
    servers: tuple[PoolServer, ...]

    @property
    def settled(self) -> bool:
        """No update is running: a new one may be sent."""
        return not self.stack_status.endswith("_IN_PROGRESS")


def parse_time(value: str | None) -> datetime | None:
    """An ISO 8601 time (Nova's ``created_at``, our heartbeats); naive ones are UTC."""
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def timestamp(moment: datetime) -> str:
    """A metadata timestamp (UTC, whole seconds)."""
    return moment.astimezone(UTC).strftime(_TIMESTAMP_FORMAT)


class HeatPool:
    """The pool stack *stack_name*, through the openstacksdk connection *conn*."""

    def __init__(self, conn: Any, stack_name: str) -> None:
        self.conn = conn
        self.stack_name = stack_name

    # -- reading ------------------------------------------------------------------------------

    def _stack(self) -> Any:
        try:
            stack = self.conn.orchestration.find_stack(self.stack_name, ignore_missing=True)
        except _cloud_errors() as exc:
            raise PoolError(f"stack {self.stack_name}: {exc}") from exc
        if stack is None:
            raise PoolError(f"stack {self.stack_name} not found")
        return stack

    def _group_stack_id(self, stack: Any) -> str | None:
        """The nested stack the ResourceGroup made (None before Heat has made it)."""
        for resource in self.conn.orchestration.resources(stack):
            if resource.name == GROUP_RESOURCE:
                return resource.physical_resource_id or None
        return None

    def read(self) -> PoolState:
        stack = self._stack()
        try:
            nested = self._group_stack_id(stack)
            members = list(self.conn.orchestration.resources(nested)) if nested else []
            by_id = {s.id: s for s in self.conn.compute.servers(details=True)
                     if (s.metadata or {}).get(POOL_KEY) == self.stack_name}
        except _cloud_errors() as exc:
            raise PoolError(f"stack {self.stack_name}: {exc}") from exc
        servers = []
        for member in sorted(members, key=lambda r: _member_order(r.name)):
            server = by_id.get(member.physical_resource_id) if member.physical_resource_id \
                else None
            servers.append(PoolServer(
                member=member.name, id=member.physical_resource_id or None,
                name=server.name if server else None,
                status=server.status if server else None,
                resource_status=member.status or "",
                created_at=parse_time(server.created_at) if server else None,
                metadata=dict(server.metadata or {}) if server else {}))
        parameters = stack.parameters or {}
        return PoolState(stack_id=stack.id, stack_name=stack.name,
                         stack_status=stack.status or "", status_reason=stack.status_reason or "",
                         count=int(parameters.get("count", 0)), servers=tuple(servers))

    # -- changing -----------------------------------------------------------------------------

    def resize(self, count: int, *, remove: Sequence[str] = ()) -> None:
        """Ask Heat for *count* servers, removing the servers whose ids are in *remove* first.

        Heat's removal policy with a server id removes exactly that server (the group's default
        is the highest-numbered one); names removed are never reused, so ``0, 1, 3`` stay. A
        removal with the count unchanged replaces the server.
        """
        stack = self._stack()
        parameters: dict[str, Any] = {"count": count}
        if remove:
            parameters["removal_policies"] = json.dumps([{"resource_list": list(remove)}])
        self._patch(f"/stacks/{stack.name}/{stack.id}", {"parameters": parameters})
        log.info("pool.resize_requested", stack=stack.name, count=count, remove=list(remove))

    def mark_unhealthy(self, server: PoolServer, reason: str) -> None:
        """Heat's mark-unhealthy on *server*'s member: the next stack update replaces it."""
        stack = self._stack()
        try:
            nested_id = self._group_stack_id(stack)
            nested = self.conn.orchestration.get_stack(nested_id) if nested_id else None
        except _cloud_errors() as exc:
            raise PoolError(f"stack {stack.name}: {exc}") from exc
        if nested is None:
            raise PoolError(f"stack {stack.name} has no {GROUP_RESOURCE} group yet")
        self._patch(f"/stacks/{nested.name}/{nested.id}/resources/{server.member}",
                    {"mark_unhealthy": True, "resource_status_reason": reason[:255]})
        log.info("pool.marked_unhealthy", stack=stack.name, member=server.member,
                 server=server.id, reason=reason)

    def update(self) -> None:
        """A stack update that changes nothing but replaces the members marked unhealthy."""
        stack = self._stack()
        self._patch(f"/stacks/{stack.name}/{stack.id}", {"parameters": {}})

    def set_metadata(self, server_id: str, values: Mapping[str, str]) -> None:
        """Set (merge) *values* into the server's metadata."""
        try:
            self.conn.compute.set_server_metadata(server_id, **dict(values))
        except _cloud_errors() as exc:
            raise PoolError(f"server {server_id}: {exc}") from exc

    def _patch(self, path: str, body: Mapping[str, Any]) -> None:
        from openstack import exceptions

        try:
            response = self.conn.orchestration.patch(path, json=dict(body))
            exceptions.raise_from_response(response)
        except _cloud_errors() as exc:
            raise PoolError(f"{path}: {exc}") from exc


def nova_pool_servers(conn: Any, pool_name: str) -> list[PoolServer]:
    """The pool's servers as Nova lists them (by their ``handler_pool`` metadata), by name.
    Nova alone: the daemon's application credential reads it; Heat is the controller's."""
    servers = [PoolServer(member="", id=s.id, name=s.name, status=s.status, resource_status="",
                          created_at=parse_time(s.created_at), metadata=dict(s.metadata or {}))
               for s in conn.compute.servers(details=True)
               if (s.metadata or {}).get(POOL_KEY) == pool_name]
    return sorted(servers, key=lambda s: s.name or "")


def serving_servers(conn: Any, pool_name: str, *, stale_after_s: float,
                    now: datetime | None = None) -> list[PoolServer]:
    """The pool's servers that may take work (:meth:`PoolServer.serving`)."""
    now = now or datetime.now(UTC)
    return [s for s in nova_pool_servers(conn, pool_name)
            if s.serving(stale_after_s=stale_after_s, now=now)]


@dataclass(frozen=True)
class PoolSummary:
    """The pool as ``status --cloud NAME --pool STACK`` shows it (Nova only)."""

    name: str
    active: int  #: serving: ACTIVE, a fresh heartbeat, no drain requested
    booting: int  #: no heartbeat yet
    draining: int
    other: int  #: ERROR, a stale heartbeat, …
    servers: tuple[PoolServer, ...]


def pool_summary(conn: Any, pool_name: str, *, stale_after_s: float,
                 now: datetime | None = None) -> PoolSummary:
    now = now or datetime.now(UTC)
    servers = nova_pool_servers(conn, pool_name)
    serving = [s for s in servers if s.serving(stale_after_s=stale_after_s, now=now)]
    draining = [s for s in servers if s.drain_requested]
    booting = [s for s in servers if s.heartbeat_at is None and not s.drain_requested
               and s.status in ("ACTIVE", "BUILD")]
    other = len(servers) - len(serving) - len(draining) - len(booting)
    return PoolSummary(name=pool_name, active=len(serving), booting=len(booting),
                       draining=len(draining), other=max(0, other), servers=tuple(servers))


def render_pool(summary: PoolSummary, *, last_decision: Mapping[str, Any] | None,
                burst_share: float | None) -> str:
    """The pool's lines for ``status --cloud``: its counts, the controller's last decision (its
    state file), the share of work that ran off the pool (the daemons' heartbeats)."""
    desired = (last_decision or {}).get("desired")
    lines = [f"pool {summary.name}: desired {desired if desired is not None else '?'}, active "
             f"{summary.active}, booting {summary.booting}, draining {summary.draining}"
             + (f", other {summary.other}" if summary.other else "")]
    if last_decision:
        lines.append(f"  backlog {last_decision.get('backlog', '?')}; last decision "
                     f"{last_decision.get('at', '?')}: {last_decision.get('action', '?')} — "
                     f"{last_decision.get('reason', '')}")
    else:
        lines.append("  no decision known (give the controller's state_file with "
                     "--autoscale-state)")
    if burst_share is not None:
        lines.append(f"  burst share (work not on the pool, from the daemons' heartbeats): "
                     f"{burst_share:.0%}")
    for server in summary.servers:
        state = server.metadata.get(STATE_KEY, "-")
        if server.drain_requested and state != DRAINED:
            state = "draining"
        lines.append(f"  {server.name}  {server.id}  {server.status}  {state}  in flight "
                     f"{server.in_flight}")
    return "\n".join(lines) + "\n"


def _cloud_errors() -> tuple[type[Exception], ...]:
    """What a call to the cloud raises when the cloud says no or cannot be reached (openstacksdk's
    errors, and keystoneauth's for a refused connection or login)."""
    from keystoneauth1.exceptions import ClientException
    from openstack.exceptions import SDKException

    return (SDKException, ClientException)


def _member_order(name: str) -> tuple[int, str]:
    return (int(name), "") if name.isdigit() else (1 << 30, name)
