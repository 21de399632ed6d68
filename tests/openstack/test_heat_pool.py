"""The private pool's Heat stack against the real Heat (Debian's heat-api and heat-engine in the
OpenStack container, Nova's fake driver: servers go ACTIVE without a guest).

The template passes Heat's own validation; the pool grows by ``count``; a removal by server id
removes exactly that server; a member marked unhealthy is replaced by the next update; and no
secret reaches the stack's parameters, the servers' user data or their metadata."""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import openstack
import pytest
from conftest import admin_connection, heat_connection

from openstack_handler.private_cloud.pool import POOL_KEY, HeatPool, PoolState, load_template

pytestmark = pytest.mark.openstack

REPO = Path(__file__).resolve().parents[2]
TEMPLATE = REPO / "ansible/roles/handler_pool/files/handler-pool.yaml"
BOOT_SCRIPT = "#!/bin/sh\necho 'the private function service starts here'\n"


@pytest.fixture(scope="module")
def tenant(openstack_cloud: Any) -> Any:
    return heat_connection(openstack_cloud)


@pytest.fixture(scope="module")
def pool_image(tenant: Any) -> Iterator[Any]:
    image = tenant.image.create_image(name="handler-pool-test-image", data=b"\0" * 1024,
                                      disk_format="raw", container_format="bare",
                                      allow_duplicates=True)
    yield image
    tenant.image.delete_image(image)


@pytest.fixture()
def pool_stack(tenant: Any, pool_image: Any) -> Iterator[HeatPool]:
    """The template applied with two servers, as the handler_pool role applies it."""
    template = load_template(TEMPLATE)
    name = f"pool-{uuid.uuid4().hex[:8]}"  # one per test: a deleted stack's name lingers
    stack = tenant.orchestration.create_stack(
        name=name, template=template,
        parameters={"pool_name": name, "count": 2, "image": pool_image.id, "flavor": "m1.tiny",
                    "user_data": BOOT_SCRIPT})
    try:
        _wait(tenant, stack, "CREATE_COMPLETE")
        yield HeatPool(tenant, name)
    finally:
        tenant.orchestration.delete_stack(stack)
        tenant.orchestration.wait_for_delete(stack, interval=1, wait=180)


def _wait(conn: Any, stack: Any, status: str) -> Any:
    failed = status.replace("COMPLETE", "FAILED")
    return conn.orchestration.wait_for_status(stack, status=status, failures=[failed],
                                              interval=1, wait=180)


def _settle(pool: HeatPool, change: Callable[[], None]) -> PoolState:
    """Run *change* (a stack update) and wait for that update, not an earlier one, to end."""
    conn = pool.conn
    before = conn.orchestration.find_stack(pool.stack_name).updated_at
    change()
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        stack = conn.orchestration.get_stack(conn.orchestration.find_stack(pool.stack_name))
        if stack.updated_at != before and stack.status == "UPDATE_COMPLETE":
            return pool.read()
        assert stack.status != "UPDATE_FAILED", stack.status_reason
        time.sleep(1)
    raise AssertionError(f"stack {pool.stack_name} not updated within 180 s")


def test_the_template_passes_heats_own_validation(tenant: Any) -> None:
    template = load_template(TEMPLATE)
    answer = tenant.orchestration.validate_template(template=template, environment=None,
                                                    template_url=None)
    assert {"pool_name", "count", "removal_policies", "image", "flavor"} <= set(
        answer.parameters)
    # a template Heat refuses is refused here (the check can fail)
    broken = {**template, "resources": {"servers": {"type": "OS::Heat::ResourceGroup",
                                                    "properties": {"no_such_property": 1}}}}
    with pytest.raises(openstack.exceptions.BadRequestException):
        tenant.orchestration.validate_template(template=broken, environment=None,
                                               template_url=None)


def test_the_pool_grows_removes_the_chosen_server_and_replaces_an_unhealthy_one(
        pool_stack: HeatPool) -> None:
    pool = pool_stack
    state = pool.read()
    assert state.count == 2 and [s.member for s in state.servers] == ["0", "1"]
    assert all(s.status == "ACTIVE" and s.metadata[POOL_KEY] == pool.stack_name
               for s in state.servers)
    # out: count 3
    state = _settle(pool, lambda: pool.resize(3))
    assert state.count == 3 and [s.status for s in state.servers] == ["ACTIVE"] * 3
    # in: exactly the middle one goes (Heat's default would take the highest-numbered)
    chosen = state.servers[1]
    state = _settle(pool, lambda: pool.resize(2, remove=[chosen.id]))
    assert [s.member for s in state.servers] == ["0", "2"]
    assert chosen.id not in {s.id for s in state.servers}
    assert pool.conn.compute.find_server(chosen.id) is None
    # self-healing: marked unhealthy, replaced by the next update under a new name
    sick, kept = state.servers
    pool.mark_unhealthy(sick, "no heartbeat within boot_timeout_s")
    state = _settle(pool, pool.update)
    assert len(state.servers) == 2 and kept.id in {s.id for s in state.servers}
    assert sick.id not in {s.id for s in state.servers}
    assert all(s.status == "ACTIVE" for s in state.servers)


def test_no_secret_in_the_stacks_parameters_user_data_or_metadata(
        openstack_cloud: Any, pool_stack: HeatPool) -> None:
    clouds = json.loads(Path(openstack_cloud.clouds_yaml).read_text())["clouds"]
    tenant, heat = clouds[openstack_cloud.cloud_name], clouds[openstack_cloud.heat_cloud_name]
    secrets = [tenant["auth"]["application_credential_secret"],
               tenant["auth"]["application_credential_id"], heat["auth"]["password"]]
    admin = admin_connection(openstack_cloud)
    stack = pool_stack.conn.orchestration.find_stack(pool_stack.stack_name)
    seen = [json.dumps(stack.parameters)]
    for server in pool_stack.read().servers:
        detail = admin.compute.get(f"/servers/{server.id}",
                                   microversion="2.3").json()["server"]
        user_data = detail.get("OS-EXT-SRV-ATTR:user_data")
        assert user_data, "the admin view shows the servers' user data"
        assert base64.b64decode(user_data).decode() == BOOT_SCRIPT  # RAW: passed through
        seen += [user_data, json.dumps(detail["metadata"])]
        assert set(detail["metadata"]) == {POOL_KEY, "role"}  # no Heat credentials added
    text = "\n".join(seen)
    assert not [s for s in secrets if s in text]
