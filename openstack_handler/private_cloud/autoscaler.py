"""The pool's controller: every ``interval_s``, one step of read → decide → ask Heat.

A step reads the backlog (the input queue's visible + in-flight messages, plus the requests a
web tier holds: :class:`WebBacklog`) and the pool
(:class:`~openstack_handler.private_cloud.pool.HeatPool`: the stack, its members, their
``handler_*`` metadata), then does at most one thing that changes the stack:

1. nothing while a stack update runs (Heat is busy; the next step looks again);
2. after Nova refused a server for quota: the failed members go, the pool holds the size it has
   (logged once), and it grows again only after ``quota_retry_s``;
3. drained servers (``handler_state=drained`` after ``handler_drain=requested``) are removed,
   exactly those, through the stack's removal policy;
4. unhealthy servers (Nova ERROR, a failed Heat resource, or no heartbeat ``boot_timeout_s``
   after creation) are marked unhealthy in Heat and replaced by a stack update — or removed, when
   they were being drained anyway;
5. the size: :class:`~openstack_handler.private_cloud.scaling.Scaler` decides; growing cancels
   drains first (a draining server is capacity already paid for), then raises ``count``;
   shrinking requests drains (least in flight first), never deletes a server that may be working.

Every step is one ``autoscale.decision`` JSON log line, and the last one is kept in
``state_file`` for ``openstack-handler status --cloud``. All the controller knows lives in the
stack and the servers' metadata, so a controller killed anywhere and restarted resumes from them
(a scale-out already sent shows as Heat's ``count`` or a running update, and is not sent again).
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog

from openstack_handler.private_cloud.pool import (
    DRAIN_KEY,
    DRAIN_REQUESTED,
    HeatPool,
    PoolError,
    PoolServer,
    PoolState,
    parse_time,
    timestamp,
)
from openstack_handler.private_cloud.scaling import Observation, Scaler, ScalingPolicy

log = structlog.get_logger(__name__)

#: when the controller asked a server to drain (for the drain deadline).
DRAIN_AT_KEY = "handler_drain_at"
_FAILED_RESOURCE = ("CREATE_FAILED", "UPDATE_FAILED", "CHECK_FAILED")


@dataclass(frozen=True, kw_only=True)
class AutoscaleSettings:
    """``openstack-handler autoscale --config FILE``: the TOML file's keys."""

    #: the clouds.yaml entry that drives Heat (a password login: Heat makes trusts, which
    #: Keystone refuses to an application credential)
    cloud_name: str
    #: the pool's stack (the handler_pool role's ``handler_pool_stack_name``)
    stack_name: str
    #: the input queue whose backlog sizes the pool
    input_queue_url: str
    region: str = "us-east-1"
    #: SQS's endpoint (the local cloud's moto); None: boto3's configuration, else AWS
    endpoint_url: str | None = None
    #: the AWS profile that reads the queue's attributes; None: boto3's default chain
    profile: str | None = None
    interval_s: float = 10.0
    min_vms: int = 0
    max_vms: int = 19
    acceptable_wait_s: float = 30.0
    assumed_s_per_message: float = 1.0
    max_step_out: int = 4
    scale_in_cooldown_s: float = 60.0
    #: a server without a heartbeat this long after creation is replaced
    boot_timeout_s: float = 300.0
    #: a draining server that has not drained after this is reported (and kept)
    drain_timeout_s: float = 900.0
    #: after a quota refusal, the pool grows again no sooner than this
    quota_retry_s: float = 300.0
    cloud_api_timeout_s: float = 30.0
    #: where the last decision is kept for ``status --cloud`` ("" for nowhere)
    state_file: str = ""
    #: the web tier's ``/api/status``: the requests it holds join the backlog (None: no web tier)
    web_status_url: str | None = None
    #: the web tier's token, for a web tier off loopback; None: the systemd credential
    #: ``web-token`` when there is one
    web_token_file: str | None = None

    def __post_init__(self) -> None:
        for name in ("cloud_name", "stack_name", "input_queue_url"):
            if not getattr(self, name):
                raise ValueError(f"{name} is required")
        if not 0.5 <= self.interval_s <= 3600:
            raise ValueError(f"interval_s must be 0.5..3600, not {self.interval_s}")
        for name in ("boot_timeout_s", "drain_timeout_s", "quota_retry_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")
        try:
            self.policy()
        except ValueError as exc:
            raise ValueError(str(exc)) from exc

    def policy(self) -> ScalingPolicy:
        return ScalingPolicy(min_vms=self.min_vms, max_vms=self.max_vms,
                             acceptable_wait_s=self.acceptable_wait_s,
                             assumed_s_per_message=self.assumed_s_per_message,
                             max_step_out=self.max_step_out,
                             scale_in_cooldown_s=self.scale_in_cooldown_s)


def queue_backlog(sqs: Any, queue_url: str) -> int:
    """Messages waiting or in flight on the queue (what the pool and Lambda must still do)."""
    attributes = sqs.get_queue_attributes(
        QueueUrl=queue_url, AttributeNames=["ApproximateNumberOfMessages",
                                            "ApproximateNumberOfMessagesNotVisible"])["Attributes"]
    return int(attributes.get("ApproximateNumberOfMessages", 0)) + \
        int(attributes.get("ApproximateNumberOfMessagesNotVisible", 0))


class WebBacklog:
    """The requests a web tier holds (waiting for a slot or running), read from its
    ``/api/status`` over HTTP: the web tier's share of the backlog, as the daemons' received
    messages are the queue's in-flight share. A web tier that does not answer holds nothing
    that the controller could serve sooner: it counts 0, logged once per outage."""

    def __init__(self, url: str, *, token: str | None = None, timeout_s: float = 5.0) -> None:
        self.url = url
        self._token = token
        self._timeout_s = timeout_s
        self._problem: str | None = None

    def read(self) -> int:
        import urllib.request

        request = urllib.request.Request(self.url, headers={"Accept": "application/json"})
        if self._token:
            request.add_header("Authorization", f"Bearer {self._token}")
        try:
            with urllib.request.urlopen(request, timeout=self._timeout_s) as response:
                held = int(json.loads(response.read())["held"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            problem = f"{type(exc).__name__}: {exc}"[:200]
            if problem != self._problem:
                log.warning("autoscale.web_tier_unreadable", url=self.url, error=problem,
                            note="its held requests count 0 until it answers")
                self._problem = problem
            return 0
        if self._problem is not None:
            log.info("autoscale.web_tier_readable", url=self.url)
            self._problem = None
        return held


def read_web_token(settings: AutoscaleSettings, env: Mapping[str, str] = os.environ
                   ) -> str | None:
    """``web_token_file``, else the systemd credential ``web-token``; None when neither."""
    if settings.web_token_file:
        path = Path(settings.web_token_file)
    elif env.get("CREDENTIALS_DIRECTORY"):
        path = Path(env["CREDENTIALS_DIRECTORY"]) / "web-token"
        if not path.exists():
            return None
    else:
        return None
    return path.read_text().strip() or None


@dataclass(frozen=True)
class PoolCounts:
    """The pool by kind, as one step saw it."""

    desired: int  #: Heat's count
    active: int  #: heartbeating, taking work
    booting: int  #: created, no heartbeat yet
    draining: int
    unhealthy: int


class Autoscaler:
    """See the module docstring; ``step()`` is one round, ``run()`` loops until stopped."""

    def __init__(self, settings: AutoscaleSettings, *, pool: HeatPool,
                 backlog: Callable[[], int], clock: Callable[[], float] = time.monotonic,
                 now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.settings = settings
        self.pool = pool
        self.scaler = Scaler(settings.policy())
        self._backlog = backlog
        self._clock = clock
        self._now = now
        self._quota_until: float | None = None
        self._quota_cap: int | None = None
        self._reported: set[str] = set()  #: problems logged once (quota, overdue drains)
        self._stop = threading.Event()
        self.last: dict[str, Any] = {}

    # -- classification -----------------------------------------------------------------------

    def _unhealthy_reason(self, server: PoolServer, now: datetime) -> str | None:
        if server.status == "ERROR":
            return "the server is in ERROR"
        if server.resource_status in _FAILED_RESOURCE and server.id is not None:
            return f"its Heat resource is {server.resource_status}"
        if server.heartbeat_at is None and server.created_at is not None and \
                (now - server.created_at).total_seconds() > self.settings.boot_timeout_s:
            return f"no heartbeat within boot_timeout_s ({self.settings.boot_timeout_s:.0f} s)"
        return None

    def counts(self, state: PoolState, now: datetime) -> PoolCounts:
        unhealthy = [s for s in state.servers if self._unhealthy_reason(s, now)]
        draining = [s for s in state.servers if s.drain_requested and s not in unhealthy]
        active = [s for s in state.servers if s.heartbeat_at is not None
                  and s not in unhealthy and s not in draining]
        booting = len(state.servers) - len(unhealthy) - len(draining) - len(active)
        return PoolCounts(desired=state.count, active=len(active), booting=max(0, booting),
                          draining=len(draining), unhealthy=len(unhealthy))

    # -- one step -----------------------------------------------------------------------------

    def step(self) -> dict[str, Any]:
        """One round; returns the decision as logged."""
        try:
            state = self.pool.read()
            backlog = self._backlog()
        except PoolError as exc:
            return self._record("hold", f"cannot read the pool: {exc}", backlog=None)
        except Exception as exc:  # noqa: BLE001 - boto3/botocore raise many kinds
            return self._record("hold", f"cannot read the backlog: {type(exc).__name__}: {exc}",
                                backlog=None)
        now = self._now()
        counts = self.counts(state, now)
        facts = {"backlog": backlog, **asdict(counts)}
        if not state.settled:
            return self._record("hold", f"the stack is {state.stack_status}", **facts)
        if "quota" in state.status_reason.lower() and state.stack_status.endswith("FAILED"):
            return self._quota(state, facts)
        drained = [s for s in state.servers if s.drained and s.id]
        if drained:
            ids = [s.id for s in drained if s.id]
            self.pool.resize(state.count - len(drained), remove=ids)
            return self._record("remove", f"drained: {', '.join(s.name or '?' for s in drained)}",
                                removed=ids, **facts)
        sick = [(s, reason) for s in state.servers
                if (reason := self._unhealthy_reason(s, now)) is not None]
        if sick:
            return self._heal(state, sick, facts)
        self._report_overdue_drains(state, now)
        return self._size(state, backlog, facts)

    def _quota(self, state: PoolState, facts: Mapping[str, Any]) -> dict[str, Any]:
        """Nova refused servers: drop the failed members, hold what exists."""
        failed = [s for s in state.servers if s.id is None or s.resource_status == "CREATE_FAILED"]
        existing = [s for s in state.servers if s not in failed]
        self._quota_cap = len(existing)
        self._quota_until = self._clock() + self.settings.quota_retry_s
        if "quota" not in self._reported:
            self._reported.add("quota")
            log.warning("autoscale.quota_refused", stack=state.stack_name,
                        holding=len(existing), reason=state.status_reason[:300],
                        retry_after_s=self.settings.quota_retry_s)
        self.pool.resize(len(existing), remove=[s.id or s.member for s in failed])
        return self._record("hold", f"quota: the cloud refused servers; holding {len(existing)}",
                            **facts)

    def _heal(self, state: PoolState, sick: list[tuple[PoolServer, str]],
              facts: Mapping[str, Any]) -> dict[str, Any]:
        going = [s for s, _ in sick if s.drain_requested and s.id]
        if going:  # it was leaving anyway: remove, do not replace
            self.pool.resize(state.count - len(going), remove=[s.id for s in going if s.id])
            return self._record("remove", "unhealthy while draining: "
                                + ", ".join(s.name or "?" for s in going), **facts)
        for server, reason in sick:
            if server.resource_status != "CHECK_FAILED":
                self.pool.mark_unhealthy(server, reason)
        self.pool.update()
        return self._record("replace", "; ".join(f"{s.name or s.member}: {reason}"
                                                 for s, reason in sick), **facts)

    def _report_overdue_drains(self, state: PoolState, now: datetime) -> None:
        for server in state.servers:
            asked = parse_time(server.metadata.get(DRAIN_AT_KEY))
            key = f"overdue:{server.id}"
            if server.drain_requested and not server.drained and asked is not None and \
                    (now - asked).total_seconds() > self.settings.drain_timeout_s and \
                    key not in self._reported:
                self._reported.add(key)
                log.error("autoscale.drain_overdue", server=server.name, id=server.id,
                          in_flight=server.in_flight, drain_timeout_s=self.settings.drain_timeout_s,
                          note="kept, not deleted: find out what still runs there")

    def _size(self, state: PoolState, backlog: int, facts: Mapping[str, Any]) -> dict[str, Any]:
        kept = [s for s in state.servers if not s.drain_requested]
        measured = [s.s_per_message for s in kept if s.s_per_message is not None]
        decision = self.scaler.decide(
            Observation(backlog=backlog, size=len(kept),
                        s_per_message=sum(measured) / len(measured) if measured else None),
            now=self._clock())
        desired, reason = decision.desired, decision.reason
        if self._quota_cap is not None and self._quota_until is not None:
            if self._clock() < self._quota_until and desired > self._quota_cap:
                desired, reason = max(len(kept), self._quota_cap), \
                    f"hold: quota (retry in {self._quota_until - self._clock():.0f} s); {reason}"
            elif self._clock() >= self._quota_until:
                self._quota_cap = self._quota_until = None
                self._reported.discard("quota")
        extra = {"target": decision.target, "per_server": decision.per_server,
                 "wanted": desired}
        if desired > len(kept):
            return self._grow(state, desired - len(kept), reason, {**facts, **extra})
        if desired < len(kept):
            return self._shrink(kept, len(kept) - desired, reason, {**facts, **extra})
        return self._record("hold", reason, **facts, **extra)

    def _grow(self, state: PoolState, wanted: int, reason: str,
              facts: Mapping[str, Any]) -> dict[str, Any]:
        back = [s for s in state.servers if s.drain_requested and not s.drained and s.id][:wanted]
        for server in back:  # capacity already paid for: cancel its drain
            assert server.id is not None
            self.pool.set_metadata(server.id, {DRAIN_KEY: "", DRAIN_AT_KEY: ""})
        more = wanted - len(back)
        if more:
            self.pool.resize(state.count + more)
        return self._record("out", reason, added=more,
                            undrained=[s.name for s in back], **facts)

    def _shrink(self, kept: list[PoolServer], surplus: int, reason: str,
                facts: Mapping[str, Any]) -> dict[str, Any]:
        def order(server: PoolServer) -> tuple[int, int, float]:
            # no heartbeat yet (never took work) first, then the least in flight, newest first
            created = server.created_at.timestamp() if server.created_at else 0.0
            return (0 if server.heartbeat_at is None else 1, server.in_flight, -created)

        chosen = sorted((s for s in kept if s.id), key=order)[:surplus]
        stamp = timestamp(self._now())
        for server in chosen:
            assert server.id is not None
            self.pool.set_metadata(server.id, {DRAIN_KEY: DRAIN_REQUESTED, DRAIN_AT_KEY: stamp})
        return self._record("in", reason, draining_now=[
            {"name": s.name, "id": s.id, "in_flight": s.in_flight} for s in chosen], **facts)

    # -- bookkeeping --------------------------------------------------------------------------

    def _record(self, action: str, reason: str, **facts: Any) -> dict[str, Any]:
        decision = {"action": action, "reason": reason, "at": timestamp(self._now()),
                    "stack": self.pool.stack_name, **facts}
        log.info("autoscale.decision", **decision)
        self.last = decision
        if self.settings.state_file:
            _write_json(Path(self.settings.state_file), decision)
        return decision

    def run(self, *, on_step: Callable[[dict[str, Any]], None] | None = None) -> None:
        while not self._stop.is_set():
            try:
                decision = self.step()
            except Exception:  # the outermost loop: log with the traceback and carry on
                log.exception("autoscale.step_failed", stack=self.pool.stack_name)
                decision = {}
            if on_step is not None:
                on_step(decision)
            self._stop.wait(self.settings.interval_s)

    def stop(self) -> None:
        self._stop.set()


def read_last_decision(path: Path) -> dict[str, Any] | None:
    try:
        document = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return document if isinstance(document, dict) else None


def _write_json(path: Path, document: Mapping[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w") as handle:
        json.dump(document, handle, indent=2, default=str)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
