"""The controller's and the agent's rules, one at a time, on a pool held in memory (the real Heat
runs them end to end in test_pool_autoscale.py): which change a step makes, and the drain
handshake's timing."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from structlog.testing import capture_logs

from openstack_handler.private_cloud.autoscaler import DRAIN_AT_KEY, Autoscaler, AutoscaleSettings
from openstack_handler.private_cloud.pool import (
    DRAIN_KEY,
    ENDPOINT_KEY,
    HEARTBEAT_KEY,
    IN_FLIGHT_KEY,
    STATE_KEY,
    PoolError,
    PoolServer,
    PoolState,
    timestamp,
)
from openstack_handler.private_cloud.pool_agent import AgentSettings, PoolAgent, Usage

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


def server(member: str, *, beat: bool = True, in_flight: int = 0, drain: bool = False,
           drained: bool = False, status: str = "ACTIVE", resource: str = "CREATE_COMPLETE",
           age_s: float = 600, **metadata: str) -> PoolServer:
    values = {"handler_pool": "p"}
    if beat:
        values |= {ENDPOINT_KEY: f"http://10.0.0.{member}:9000", HEARTBEAT_KEY: timestamp(NOW),
                   IN_FLIGHT_KEY: str(in_flight)}
    if drain:
        values |= {DRAIN_KEY: "requested", DRAIN_AT_KEY: timestamp(NOW)}
    if drained:
        values[STATE_KEY] = "drained"
    return PoolServer(member=member, id=f"id-{member}", name=f"p-{member}", status=status,
                      resource_status=resource, created_at=NOW - timedelta(seconds=age_s),
                      metadata=values | metadata)


@dataclass
class FakePool:
    """HeatPool's calls, recorded; read() answers the state set."""

    state: PoolState
    stack_name: str = "p"
    calls: list[tuple[str, Any]] = field(default_factory=list)

    def read(self) -> PoolState:
        return self.state

    def resize(self, count: int, *, remove: Any = ()) -> None:
        self.calls.append(("resize", (count, list(remove))))

    def mark_unhealthy(self, server: PoolServer, reason: str) -> None:
        self.calls.append(("mark_unhealthy", server.member))

    def update(self) -> None:
        self.calls.append(("update", None))

    def set_metadata(self, server_id: str, values: dict[str, str]) -> None:
        self.calls.append(("set_metadata", (server_id, dict(values))))


def pool_of(*servers: PoolServer, status: str = "UPDATE_COMPLETE", reason: str = "",
            count: int | None = None) -> FakePool:
    return FakePool(PoolState(stack_id="s", stack_name="p", stack_status=status,
                              status_reason=reason,
                              count=len(servers) if count is None else count,
                              servers=tuple(servers)))


def controller(pool: FakePool, backlog: int | Exception = 0, **overrides: Any) -> Autoscaler:
    settings = AutoscaleSettings(**{"cloud_name": "c", "stack_name": "p",
                                    "input_queue_url": "https://q", "acceptable_wait_s": 10.0,
                                    "assumed_s_per_message": 1.0, "scale_in_cooldown_s": 0.0,
                                    **overrides})

    def read_backlog() -> int:
        if isinstance(backlog, Exception):
            raise backlog
        return backlog

    return Autoscaler(settings, pool=pool, backlog=read_backlog,  # type: ignore[arg-type]
                      clock=lambda: 1000.0, now=lambda: NOW)


def test_a_running_stack_update_is_waited_for() -> None:
    pool = pool_of(server("0"), status="UPDATE_IN_PROGRESS")
    assert controller(pool, backlog=500).step()["action"] == "hold"
    assert pool.calls == []


def test_exactly_the_drained_servers_are_removed() -> None:
    pool = pool_of(server("0"), server("1", drain=True, drained=True), server("2"))
    decision = controller(pool, backlog=25).step()
    assert decision["action"] == "remove"
    assert pool.calls == [("resize", (2, ["id-1"]))]


def test_growing_cancels_drains_before_adding_servers() -> None:
    pool = pool_of(server("0"), server("1", drain=True, in_flight=1))
    decision = controller(pool, backlog=40).step()  # 10 per server: 4 wanted, 1 kept
    assert decision["action"] == "out"
    assert pool.calls == [("set_metadata", ("id-1", {DRAIN_KEY: "", DRAIN_AT_KEY: ""})),
                          ("resize", (4, []))]


def test_shrinking_drains_the_idlest_never_removes() -> None:
    pool = pool_of(server("0", in_flight=2), server("1", in_flight=0), server("2", in_flight=1),
                   server("3", beat=False, age_s=5))
    decision = controller(pool, backlog=15).step()  # asks for 2 of 4
    assert decision["action"] == "in"
    drained = [args[0] for name, args in pool.calls if name == "set_metadata"]
    assert drained == ["id-3", "id-1"]  # the one that never took work, then the least busy
    assert not [c for c in pool.calls if c[0] == "resize"]


def test_a_server_in_error_is_marked_unhealthy_and_replaced() -> None:
    pool = pool_of(server("0"), server("1", status="ERROR"))
    decision = controller(pool, backlog=20).step()
    assert decision["action"] == "replace" and "ERROR" in decision["reason"]
    assert pool.calls == [("mark_unhealthy", "1"), ("update", None)]


def test_a_server_that_never_heartbeats_is_replaced_after_boot_timeout() -> None:
    young = pool_of(server("0", beat=False, age_s=10))
    assert controller(young, backlog=10, boot_timeout_s=60).step()["action"] == "hold"
    old = pool_of(server("0", beat=False, age_s=61))
    decision = controller(old, backlog=10, boot_timeout_s=60).step()
    assert decision["action"] == "replace" and "no heartbeat" in decision["reason"]


def test_an_unhealthy_server_that_was_draining_is_removed_not_replaced() -> None:
    pool = pool_of(server("0"), server("1", status="ERROR", drain=True))
    assert controller(pool, backlog=10).step()["action"] == "remove"
    assert pool.calls == [("resize", (1, ["id-1"]))]


def test_a_quota_refusal_holds_the_pool_and_is_logged_once() -> None:
    failed = PoolServer(member="3", id=None, name=None, status=None,
                        resource_status="CREATE_FAILED")
    pool = pool_of(server("0"), server("1"), server("2"), failed, status="UPDATE_FAILED",
                   reason="Resource UPDATE failed: Forbidden: Quota exceeded for instances")
    scaler = controller(pool, backlog=1000)
    with capture_logs() as logs:
        assert scaler.step()["reason"].startswith("quota")
        pool.state = replace(pool.state, stack_status="UPDATE_COMPLETE", status_reason="",
                             servers=pool.state.servers[:3], count=3)
        for _ in range(3):
            assert scaler.step()["action"] == "hold"  # the backlog asks for more: held at 3
    assert pool.calls == [("resize", (3, ["3"]))]
    assert len([e for e in logs if e["event"] == "autoscale.quota_refused"]) == 1


def test_an_overdue_drain_is_reported_once_and_the_server_kept() -> None:
    late = server("1", drain=True, in_flight=1,
                  **{DRAIN_AT_KEY: timestamp(NOW - timedelta(seconds=1000))})
    pool = pool_of(server("0"), late)
    scaler = controller(pool, backlog=5, drain_timeout_s=900)
    with capture_logs() as logs:
        scaler.step()
        scaler.step()
    assert len([e for e in logs if e["event"] == "autoscale.drain_overdue"]) == 1
    assert not [c for c in pool.calls if c[0] == "resize"]


@pytest.mark.parametrize("problem", [RuntimeError("sqs down"), PoolError("heat down")])
def test_a_read_failure_holds_and_does_not_raise(problem: Exception) -> None:
    class Broken(FakePool):
        def read(self) -> PoolState:
            if isinstance(problem, PoolError):
                raise problem
            return super().read()

    pool = Broken(pool_of(server("0")).state)
    decision = controller(pool, backlog=problem).step()
    assert decision["action"] == "hold" and "cannot read" in decision["reason"]


# -- the agent's side of the handshake ---------------------------------------------------------

class FakeCompute:
    def __init__(self, metadata: dict[str, str]) -> None:
        self.metadata = metadata

    def get_server(self, server_id: str) -> Any:
        return type("Server", (), {"metadata": dict(self.metadata)})()

    def set_server_metadata(self, server_id: str, **values: str) -> None:
        self.metadata.update(values)


def test_the_agent_reports_drained_only_after_a_quiet_spell_with_nothing_in_flight() -> None:
    compute = FakeCompute({DRAIN_KEY: ""})
    clock = [0.0]
    usage = [Usage(in_flight=1, invocations=10, duration_ms_total=10_000, slots=2)]
    agent = PoolAgent(AgentSettings(cloud_name="c", server_id="s", endpoint_url="http://x:1",
                                    drain_quiet_s=15),
                      connect=lambda: type("Conn", (), {"compute": compute})(),
                      usage=lambda: usage[0], clock=lambda: clock[0], now=lambda: NOW)
    assert agent.beat()[STATE_KEY] == "serving"
    compute.metadata[DRAIN_KEY] = "requested"
    usage[0] = Usage(in_flight=0, invocations=12, duration_ms_total=13_000, slots=2)
    clock[0] = 5.0
    assert agent.beat()[STATE_KEY] == "draining"  # the last ones just finished
    assert compute.metadata["handler_s_per_message"] == "0.750"  # 1.5 s each / 2 slots
    clock[0] = 15.0
    assert agent.beat()[STATE_KEY] == "draining"  # quiet for 10 s only
    clock[0] = 21.0
    assert agent.beat()[STATE_KEY] == "drained"


def test_an_agent_whose_service_does_not_answer_publishes_no_heartbeat() -> None:
    compute = FakeCompute({})

    def usage() -> Usage:
        raise ConnectionRefusedError("nobody on :9000")

    agent = PoolAgent(AgentSettings(cloud_name="c", server_id="s", endpoint_url="http://x:1"),
                      connect=lambda: type("Conn", (), {"compute": compute})(), usage=usage)
    assert agent.beat() is None and compute.metadata == {}


# -- what `status --cloud NAME --pool STACK` shows ---------------------------------------------

def test_the_pool_summary_names_its_counts_and_the_last_decision() -> None:
    from openstack_handler.private_cloud.pool import PoolSummary, render_pool

    summary = PoolSummary(name="p", active=2, booting=1, draining=1, other=0,
                          servers=(server("0"), server("1", drain=True, in_flight=1)))
    text = render_pool(summary, last_decision={"desired": 3, "backlog": 42, "action": "in",
                                               "at": "2026-12-07T12:00:00Z",
                                               "reason": "in: backlog 42 asks for 3"},
                       burst_share=0.25)
    lines = text.splitlines()
    assert lines[0] == "pool p: desired 3, active 2, booting 1, draining 1"
    assert lines[1] == ("  backlog 42; last decision 2026-12-07T12:00:00Z: in — "
                        "in: backlog 42 asks for 3")
    assert "25%" in lines[2]
    assert lines[4].split()[-4:] == ["draining", "in", "flight", "1"]


def test_the_burst_share_is_the_work_off_the_pool_in_the_daemons_heartbeats() -> None:
    from openstack_handler.cli.daemon_commands import _burst_share

    class Beat:
        def __init__(self, split: str) -> None:
            self.split = split

        def value(self, key: str) -> str:
            return self.split if key == "split" else ""

    share = _burst_share([Beat("private=30,aws=10"), Beat("private=50,aws=10")], "private")
    assert share == pytest.approx(0.2)
    assert _burst_share([Beat("")], "private") is None
