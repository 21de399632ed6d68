"""The handler_pool role through site.yml against the real Heat: it creates the pool's stack
from the template in the repo, a second run changes nothing, and an update to the template's
parameters keeps the size the autoscaler set."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from ansible_helpers import run_playbook
from conftest import heat_connection

from openstack_handler.private_cloud.pool import POOL_KEY, HeatPool

pytestmark = pytest.mark.openstack

STACK = "handler-pool-role"


def test_the_pool_play_creates_the_stack_and_leaves_its_size_to_the_autoscaler(
        openstack_cloud: Any, tmp_path: Path) -> None:
    conn = heat_connection(openstack_cloud)
    image = conn.image.create_image(name="handler-pool-role-image", data=b"\0" * 1024,
                                    disk_format="raw", container_format="bare",
                                    allow_duplicates=True)
    variables = {"handler_pool_cloud": openstack_cloud.heat_cloud_name,
                 "handler_pool_stack_name": STACK, "handler_pool_image": image.id,
                 "handler_pool_flavor": "m1.tiny", "handler_pool_initial_count": 1,
                 "handler_pool_timeout": 180}
    extra_vars = tmp_path / "vars.json"
    extra_vars.write_text(json.dumps(variables))
    env = {"OS_CLIENT_CONFIG_FILE": openstack_cloud.clouds_yaml}
    try:
        # WHEN the play runs, the stack is made with one server of the pool
        first = run_playbook("localhost,", extra_vars, "--tags", "pool", env=env)
        assert first.returncode == 0, first.output[-5000:]
        pool = HeatPool(conn, STACK)
        state = pool.read()
        assert state.stack_status == "CREATE_COMPLETE" and state.count == 1
        assert [s.status for s in state.servers] == ["ACTIVE"]
        assert state.servers[0].metadata[POOL_KEY] == STACK
        # WHEN it runs again, nothing changes
        second = run_playbook("localhost,", extra_vars, "--tags", "pool", env=env)
        assert second.returncode == 0, second.output[-5000:]
        assert second.recap("localhost")["changed"] == 0, second.output[-5000:]
        # GIVEN the autoscaler grew the pool WHEN an operator updates the stack's parameters
        pool.resize(2)
        conn.orchestration.wait_for_status(conn.orchestration.find_stack(STACK),
                                           status="UPDATE_COMPLETE", failures=["UPDATE_FAILED"],
                                           interval=1, wait=120)
        extra_vars.write_text(json.dumps(variables | {"handler_pool_update": True,
                                                      "handler_pool_user_data": "#!/bin/sh\n"}))
        third = run_playbook("localhost,", extra_vars, "--tags", "pool", env=env)
        assert third.returncode == 0, third.output[-5000:]
        # THEN the size stays the autoscaler's
        state = pool.read()
        assert state.stack_status == "UPDATE_COMPLETE" and state.count == 2, state
        assert len(state.servers) == 2
    finally:
        stack = conn.orchestration.find_stack(STACK)
        if stack is not None:
            conn.orchestration.delete_stack(stack)
            conn.orchestration.wait_for_delete(stack, interval=1, wait=180)
        conn.image.delete_image(image)
