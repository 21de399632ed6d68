"""A pool target: its slots follow the servers the cloud lists, each invocation goes to the least
busy member, an unreachable member is set aside and the work goes to another at once, a member
that leaves finishes its work and gets no more. Real HTTP: each member is a fake Lambda endpoint
(the error paths), the placement is the daemon's."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from fake_lambda import FakeLambda, Reply, results_for

from openstack_handler.daemon.availability import Availability
from openstack_handler.daemon.errors import InvokeUnavailable
from openstack_handler.daemon.invoker import LambdaInvoker, lambda_client_config
from openstack_handler.daemon.placement import Placement, Target
from openstack_handler.daemon.pool_target import PoolInvoker, PoolMember, PoolRefresher
from openstack_handler.daemon.settings import load_settings

FUNCTION = "face-recognition"
PAYLOAD = {"Records": [{"s3": {"bucket": {"name": "in"}, "object": {"key": "a.mp4"}}}]}


def _invoker_on(url: str) -> LambdaInvoker:
    client = boto3.session.Session(aws_access_key_id="k", aws_secret_access_key="s",
                                   region_name="us-east-1").client(
        "lambda", endpoint_url=url,
        config=lambda_client_config(function_timeout_s=5, concurrency=4))
    return LambdaInvoker(client=client, function_name=FUNCTION, max_attempts=1)


def _answer_after(delay_s: float) -> Any:
    def behaviour(name: str, payload: dict[str, Any]) -> Reply:
        time.sleep(delay_s)
        return Reply(body=results_for(payload))

    return behaviour


@pytest.fixture()
def members() -> Iterator[list[FakeLambda]]:
    servers = [FakeLambda(_answer_after(0.0)).start() for _ in range(2)]
    yield servers
    for server in servers:
        server.stop()


def _pool(slots_per_member: int = 2) -> tuple[Placement, Target, PoolInvoker]:
    invoker = PoolInvoker(function_name=FUNCTION, slots_per_member=slots_per_member,
                          make_invoker=_invoker_on, quarantine_s=30)
    target = Target(name="private", invoker=invoker, slots=0,
                    availability=Availability("target_private", cap_s=1), max_slots=8)
    placement = Placement([target], burst_after_s=0)
    invoker.bind(lambda slots: placement.set_slots(target, slots))
    return placement, target, invoker


def _member(i: int, server: FakeLambda) -> PoolMember:
    return PoolMember(id=f"id-{i}", name=f"pool-{i}", endpoint_url=server.url)


def test_slots_follow_the_members_listed(members: list[FakeLambda]) -> None:
    placement, target, invoker = _pool()
    assert target.slots == 0 and placement.total_slots == 8  # threads sized for max_servers
    invoker.set_members([_member(0, members[0]), _member(1, members[1])])
    assert target.slots == 4
    invoker.set_members([_member(1, members[1])])
    assert target.slots == 2


def test_invocations_spread_over_the_members(members: list[FakeLambda]) -> None:
    _, _, invoker = _pool()
    invoker.set_members([_member(0, members[0]), _member(1, members[1])])
    threads = [threading.Thread(target=invoker.run, args=(PAYLOAD,)) for _ in range(4)]
    for server in members:
        server.behaviour = _answer_after(0.3)
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [len(server.calls) for server in members] == [2, 2]


def test_an_unreachable_member_is_set_aside_and_the_work_runs_on_another(
        members: list[FakeLambda]) -> None:
    _, target, invoker = _pool()
    dead = FakeLambda(lambda name, payload: Reply(body={})).start()
    dead.stop()  # its port refuses connections now
    invoker.set_members([_member(0, dead), _member(1, members[1])])
    assert target.slots == 4
    invoked = invoker.run(PAYLOAD)  # tried on pool-0 first (alphabetical tie), then pool-1
    assert invoked.result["results"][0]["key"] == "a.mp4"
    assert not dead.calls
    assert len(members[1].calls) == 1
    assert target.slots == 2  # pool-0 out until the cloud lists it again after quarantine
    assert {m["name"]: m["quarantined"] for m in invoker.members()} == {
        "pool-0": True, "pool-1": False}


def test_no_member_answering_is_unavailable() -> None:
    _, _, invoker = _pool()
    with pytest.raises(InvokeUnavailable, match="no server"):
        invoker.run(PAYLOAD)
    with pytest.raises(InvokeUnavailable):
        invoker.probe()


def test_a_member_that_leaves_finishes_its_work_and_takes_no_more(
        members: list[FakeLambda]) -> None:
    _, target, invoker = _pool(slots_per_member=1)
    members[0].behaviour = _answer_after(1.0)
    invoker.set_members([_member(0, members[0])])
    running = threading.Thread(target=invoker.run, args=(PAYLOAD,))
    running.start()
    time.sleep(0.3)
    invoker.set_members([_member(1, members[1])])  # pool-0 drains: no longer listed
    assert target.slots == 1
    invoker.run(PAYLOAD)
    running.join()
    assert (len(members[0].calls), len(members[1].calls)) == (1, 1)
    assert [m["name"] for m in invoker.members()] == ["pool-1"]  # gone once idle


def test_a_failed_discovery_keeps_the_members_last_listed(members: list[FakeLambda]) -> None:
    _, target, invoker = _pool()
    answers: list[Any] = [[_member(0, members[0])], RuntimeError("keystone says no")]

    def discover() -> list[PoolMember]:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    refresher = PoolRefresher(invoker, discover=discover, refresh_s=60, name="private")
    assert refresher.refresh_once() is True and target.slots == 2
    assert refresher.refresh_once() is False and target.slots == 2


def test_a_pool_target_needs_a_cloud_and_no_endpoint() -> None:
    from openstack_handler.daemon.errors import ConfigError

    base = {"input_queue_url": "https://q/in", "output_queue_url": "https://q/out",
            "function_name": FUNCTION}
    with pytest.raises(ConfigError, match="needs cloud_name"):
        load_settings(None, env={}, **base, targets=[{"name": "private", "pool": "p"}])
    with pytest.raises(ConfigError, match="drop endpoint_url"):
        load_settings(None, env={}, **base, cloud_name="c",
                      targets=[{"name": "private", "pool": "p", "endpoint_url": "http://x"}])
    settings = load_settings(None, env={}, **base, cloud_name="c",
                             targets=[{"name": "private", "pool": "p", "slots": 2,
                                       "max_servers": 5}, {"name": "aws", "slots": 4}])
    assert settings.total_slots == 14
