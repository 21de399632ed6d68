"""The system tier: the handler deployed by Ansible into a booted Debian (systemd-nspawn), with
the local cloud on the host, reachable from the VM over a veth pair.

Needs root, debootstrap and systemd-container (the Makefile installs them). The Debian root is
built before the tests (``make roots``, see localcloud.machines.roots) and cached; every session
boots a fresh copy of it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from ansible_helpers import REPO, PlayResult, run_playbook
from system_helpers import (
    CLOUD_SECRET,
    FUNCTIONS_KEY,
    FUNCTIONS_PORT,
    FUNCTIONS_PROFILE,
    FUNCTIONS_SECRET,
    WEB_PORT,
    WEB_TOKEN,
)

from localcloud.cloud import DUMMY_CREDENTIALS, REGION, LocalCloud
from localcloud.machines.nspawn import Machine, Network, clone_root, root_path
from localcloud.machines.roots import HANDLER_VM

VM_NAME = "handler-vm"


@pytest.fixture(scope="session")
def vm_network() -> Iterator[Network]:
    assert os.geteuid() == 0, "the system tier boots containers: run it as root"
    network = Network.for_this_process().create()
    yield network
    network.delete()


@pytest.fixture(scope="session")
def ssh_key(tmp_path_factory: pytest.TempPathFactory) -> Path:
    key = tmp_path_factory.mktemp("ssh") / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    return key


@pytest.fixture(scope="session")
def vm(vm_network: Network, ssh_key: Path, tmp_path_factory: pytest.TempPathFactory
       ) -> Iterator[Machine]:
    work = tmp_path_factory.mktemp("vm")
    root = root_path(HANDLER_VM)
    assert root.is_dir(), f"the VM root is not built ({root}): run `make roots` first"
    machine = Machine(clone_root(root, work / "root"), vm_network, log_path=work / "console.log",
                      hostname=VM_NAME)
    machine.authorize_ssh_key((ssh_key.with_suffix(".pub")).read_text())
    with machine:
        yield machine
    subprocess.run(["rm", "-rf", str(work / "root")], check=False)


@pytest.fixture(scope="session")
def host_cloud(course_data: Path, vm_network: Network, tmp_path_factory: pytest.TempPathFactory
               ) -> Iterator[LocalCloud]:
    """The local cloud bound to the host's end of the veth, so the VM can reach it; with the
    camera path's frame function, which the VM's web tier runs for an image."""
    with LocalCloud(gallery=course_data / "encoding", students=course_data / "student_data.json",
                    concurrency=2, camera=True, camera_concurrency=1, host=vm_network.host_ip,
                    work_dir=tmp_path_factory.mktemp("host-cloud")) as cloud:
        yield cloud


@pytest.fixture(scope="session")
def source_snapshot(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The checkout's files as they are now (tracked and new, not ignored): what the play builds
    its wheel from, frozen for the session so edits meanwhile cannot change it between runs."""
    dest = tmp_path_factory.mktemp("source")
    names = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                           cwd=REPO, check=True, capture_output=True).stdout.split(b"\0")
    for name in filter(None, names):
        source = REPO / name.decode()
        if source.is_file():
            target = dest / name.decode()
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    return dest


@pytest.fixture(scope="session")
def deployment_files(vm: Machine, vm_network: Network, ssh_key: Path, host_cloud: LocalCloud,
                     source_snapshot: Path, image_models: Path,
                     tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """An inventory naming the VM, and the operator's variables for the handler role."""
    work = tmp_path_factory.mktemp("ansible")
    inventory = work / "inventory.json"
    inventory.write_text(json.dumps({"handler_vms": {"hosts": {VM_NAME: {
        "ansible_host": vm_network.guest_ip, "ansible_user": "root",
        "ansible_ssh_private_key_file": str(ssh_key),
        "ansible_ssh_common_args": "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null",
    }}}}))
    extra_vars = work / "vars.json"
    refusing_cloud = {"auth_type": "v3applicationcredential",
                      "auth": {"auth_url": f"http://{vm_network.host_ip}:9/v3",
                               "application_credential_id": "system-test",
                               "application_credential_secret": CLOUD_SECRET}}
    extra_vars.write_text(json.dumps({
        # The aws play converges the cloud's resources (LocalCloud made them with this prefix)
        # and publishes the queue URLs and function name to the handler play, as for an operator.
        "aws_resources_prefix": host_cloud.resources.prefix,
        "aws_resources_config_file": str(work / "aws-handler.toml"),
        "aws_resources_environment": {"AWS_ENDPOINT_URL": host_cloud.moto_url,
                                      "AWS_DEFAULT_REGION": REGION, **DUMMY_CREDENTIALS},
        # short long polls: quicker READY and restarts in the test; the heartbeat on, towards a
        # cloud that refuses connections (the daemon must work regardless)
        "handler_settings": {"wait_time_s": 2, "concurrency": 4, "cloud_name": "handler",
                             "cloud_server": VM_NAME, "metadata_url": ""},
        "handler_extras": ["openstack"],
        "handler_clouds_yaml": {"clouds": {"handler": refusing_cloud}},
        "handler_environment": {"AWS_ENDPOINT_URL": host_cloud.moto_url,
                                "AWS_ENDPOINT_URL_LAMBDA": host_cloud.lambda_url},
        "handler_aws_credentials": {
            "aws_access_key_id": DUMMY_CREDENTIALS["AWS_ACCESS_KEY_ID"],
            "aws_secret_access_key": DUMMY_CREDENTIALS["AWS_SECRET_ACCESS_KEY"]},
        "handler_source_dir": str(source_snapshot),
        "handler_wheelhouse_dir": str(work / "wheelhouse"),
        "handler_restart_sec": 2,
        "handler_replicas": 2,
        # the private function service on the VM's address on the veth (the private network)
        "handler_functions_enabled": True,
        "handler_functions_host": vm_network.guest_ip,
        "handler_functions_port": FUNCTIONS_PORT,
        "handler_functions_keys": {FUNCTIONS_KEY: FUNCTIONS_SECRET},
        "handler_functions_models_dir": str(image_models),
        # the daemon's key for that service, for a [[targets]] entry with profile = ...
        "handler_aws_profiles": {FUNCTIONS_PROFILE: {
            "aws_access_key_id": FUNCTIONS_KEY, "aws_secret_access_key": FUNCTIONS_SECRET}},
        # the private pool's controller and agent, towards a cloud that refuses connections:
        # hardened, and alive whatever the cloud does (the OpenStack tier runs them for real)
        "handler_autoscale_enabled": True,
        "handler_autoscale_settings": {
            "cloud_name": "handler-heat", "stack_name": "handler-pool",
            "input_queue_url": host_cloud.provisioned.input_queue_url,
            "endpoint_url": host_cloud.moto_url, "region": REGION, "interval_s": 5.0},
        "handler_pool_agent_enabled": True,
        "handler_pool_agent_settings": {
            "cloud_name": "handler", "server_id": VM_NAME, "interval_s": 5.0,
            "endpoint_url": f"http://{vm_network.guest_ip}:{FUNCTIONS_PORT}"},
        "handler_pool_clouds_yaml": {"clouds": {
            "handler": refusing_cloud,
            "handler-heat": {"auth_type": "password", "auth": {
                "auth_url": f"http://{vm_network.host_ip}:9/v3", "username": "handler-pool",
                "password": CLOUD_SECRET, "user_domain_name": "Default",
                "project_name": "handler", "project_domain_name": "Default"}}}},
        # the web tier on every address of the VM (loopback and the veth's, nothing else there):
        # callers on loopback need no token, the host's need it
        "handler_web_enabled": True,
        "handler_web_host": "0.0.0.0",
        "handler_web_port": WEB_PORT,
        "handler_web_token": WEB_TOKEN,
        "handler_web_settings": {
            "input_bucket": host_cloud.provisioned.input_bucket,
            "output_bucket": host_cloud.provisioned.output_bucket,
            "image_function_name": host_cloud.resources.frame_function_name},
    }))
    return inventory, extra_vars


@pytest.fixture(scope="session")
def deployed(deployment_files: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory
             ) -> tuple[PlayResult, PlayResult]:
    """site.yml's aws and handler plays, run twice: (first run, second run)."""
    inventory, extra_vars = deployment_files
    log = tmp_path_factory.mktemp("ansible-log") / "ansible.log"
    first = run_playbook(inventory, extra_vars, "--tags", "aws,handler", log_path=log)
    second = run_playbook(inventory, extra_vars, "--tags", "aws,handler", log_path=log)
    return first, second
