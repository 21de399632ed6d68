"""The openstack_vm role through site.yml against the real OpenStack container, as far as a cloud
without a network data plane allows: image, keypair, security group and rule, network, subnet,
router to the external network, and a server without ports."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import openstack
import pytest
from ansible_helpers import run_playbook

pytestmark = pytest.mark.openstack

SERVER = "handler-vm-role"


def test_the_openstack_vm_play_builds_the_vm_and_a_second_run_changes_nothing(
        openstack_cloud: Any, cloud_env: str, tmp_path: Path) -> None:
    image = tmp_path / "image.raw"
    image.write_bytes(b"\0" * (1 << 20))
    key = tmp_path / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    extra_vars = tmp_path / "vars.json"
    extra_vars.write_text(json.dumps({
        "openstack_vm_cloud": cloud_env, "openstack_vm_name": SERVER,
        "openstack_vm_image_name": "handler-role-image", "openstack_vm_image_file": str(image),
        "openstack_vm_image_disk_format": "raw", "openstack_vm_flavor": "m1.tiny",
        "openstack_vm_ssh_public_key_file": f"{key}.pub", "openstack_vm_attach_network": False}))
    env = {"OS_CLIENT_CONFIG_FILE": openstack_cloud.clouds_yaml}
    conn = openstack.connect(cloud=cloud_env, api_timeout=60)  # a hung API fails, not hangs
    try:
        # WHEN the play runs the first time, everything is created and the server is ACTIVE
        first = run_playbook("localhost,", extra_vars, "--tags", "openstack_vm", env=env)
        assert first.returncode == 0, first.output[-5000:]
        assert first.recap("localhost")["changed"] >= 8, first.output[-5000:]
        server = conn.compute.find_server(SERVER, ignore_missing=False)
        assert conn.compute.get_server(server.id).status == "ACTIVE"
        assert conn.compute.fetch_server_metadata(server).metadata["role"] == \
            "face-recognition-handler"
        router = conn.network.find_router("handler-router", ignore_missing=False)
        assert router.external_gateway_info["network_id"] == \
            conn.network.find_network("public", ignore_missing=False).id
        rules = conn.network.find_security_group("handler-ssh", ignore_missing=False).\
            security_group_rules
        assert any(r["port_range_min"] == 22 and r["direction"] == "ingress" for r in rules)
        # WHEN it runs again, nothing changes
        second = run_playbook("localhost,", extra_vars, "--tags", "openstack_vm", env=env)
        assert second.returncode == 0, second.output[-5000:]
        assert second.recap("localhost")["changed"] == 0, second.output[-5000:]
    finally:
        _clean_up(conn)


def _clean_up(conn: Any) -> None:
    """Leave the shared cloud as the other tests expect it."""
    server = conn.compute.find_server(SERVER)
    if server is not None:
        conn.compute.delete_server(server)
        conn.compute.wait_for_delete(server, wait=60)
    router = conn.network.find_router("handler-router")
    if router is not None:
        for port in conn.network.ports(device_id=router.id,
                                       device_owner="network:router_interface"):
            for ip in port.fixed_ips:
                conn.network.remove_interface_from_router(router, subnet=ip["subnet_id"])
        conn.network.delete_router(router)
    for kind, name in (("subnet", "handler-subnet"), ("network", "handler-net"),
                       ("security_group", "handler-ssh")):
        found = getattr(conn.network, f"find_{kind}")(name)
        if found is not None:
            getattr(conn.network, f"delete_{kind}")(found)
    for image in conn.image.images(name="handler-role-image"):
        conn.image.delete_image(image)
    keypair = conn.compute.find_keypair("handler")
    if keypair is not None:
        conn.compute.delete_keypair(keypair)
