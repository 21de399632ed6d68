"""The pool's size decision: target tracking on backlog per server, bounded steps out, a
cooldown before in (pure: a clock is passed in)."""

from __future__ import annotations

import pytest

from openstack_handler.private_cloud.scaling import Observation, Scaler, ScalingPolicy

POLICY = ScalingPolicy(min_vms=0, max_vms=19, acceptable_wait_s=30, assumed_s_per_message=2.0,
                       max_step_out=4, scale_in_cooldown_s=60)


def test_acceptable_backlog_per_server_is_the_wait_over_the_measured_time() -> None:
    scaler = Scaler(POLICY)
    assert scaler.acceptable_backlog_per_server(None) == 15  # 30 s / 2 s assumed
    assert scaler.acceptable_backlog_per_server(3.0) == 10  # measured wins
    assert scaler.acceptable_backlog_per_server(100.0) == 1  # never 0


def test_a_backlog_of_120_asks_for_8_servers_reached_in_bounded_steps() -> None:
    scaler = Scaler(POLICY)
    sizes = [0]
    for now in range(5):
        decision = scaler.decide(Observation(backlog=120, size=sizes[-1]), now=float(now))
        assert decision.target == 8 and decision.per_server == 15
        sizes.append(decision.desired)
    assert sizes == [0, 4, 8, 8, 8, 8]
    assert scaler.decide(Observation(backlog=120, size=8), now=9).change == "none"


def test_the_size_is_clamped_to_max_and_min() -> None:
    policy = ScalingPolicy(min_vms=1, max_vms=3, acceptable_wait_s=10, assumed_s_per_message=1,
                           max_step_out=10)
    scaler = Scaler(policy)
    assert scaler.decide(Observation(backlog=10_000, size=1), now=0).desired == 3
    assert scaler.decide(Observation(backlog=0, size=0), now=0).desired == 1  # below min: at once
    assert scaler.decide(Observation(backlog=0, size=5), now=0).desired == 3  # above max: at once


def test_scale_in_waits_for_the_cooldown_below_target_then_goes_to_the_target() -> None:
    scaler = Scaler(POLICY)
    held = [scaler.decide(Observation(backlog=15, size=4), now=t) for t in (0, 30, 59)]
    assert all(d.desired == 4 and d.change == "none" for d in held)
    assert "in after" in held[-1].reason
    decision = scaler.decide(Observation(backlog=15, size=4), now=60)
    assert (decision.desired, decision.change) == (1, "in")
    # a later scale-in waits a full cooldown again
    assert scaler.decide(Observation(backlog=0, size=1), now=61).desired == 1
    assert scaler.decide(Observation(backlog=0, size=1), now=121).desired == 0


def test_backlog_coming_back_resets_the_cooldown() -> None:
    scaler = Scaler(POLICY)
    scaler.decide(Observation(backlog=0, size=2), now=0)
    assert scaler.decide(Observation(backlog=30, size=2), now=50).change == "none"  # at target
    assert scaler.decide(Observation(backlog=0, size=2), now=70).desired == 2  # cooldown anew
    assert scaler.decide(Observation(backlog=0, size=2), now=130).desired == 0


@pytest.mark.parametrize("kwargs", [{"min_vms": 3, "max_vms": 2}, {"acceptable_wait_s": 0},
                                    {"max_step_out": 0}, {"min_vms": -1}])
def test_nonsense_policies_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        ScalingPolicy(**kwargs)
