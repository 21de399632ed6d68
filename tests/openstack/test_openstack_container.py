"""Against a real OpenStack (Debian's Keystone, Glance, Placement, Nova with the fake driver,
Neutron's API server in a container): application-credential login, a port-less server, the
daemon's heartbeat in that server's metadata, and ``status --cloud`` reading it back."""

from __future__ import annotations

import io
import json
import stat
from collections.abc import Iterator
from contextlib import redirect_stdout
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import openstack
import openstack.connection
import pytest
from daemon_helpers import FUNCTION, queue_counts
from openstack.config.loader import OpenStackConfig
from test_daemon_cloud import VIDEOS, run_handler

from openstack_handler.cli import main
from openstack_handler.daemon.exit_codes import ExitCode
from openstack_handler.daemon.handler import Handler
from openstack_handler.daemon.settings import load_settings
from openstack_handler.private_cloud.cloud_status import (
    CloudStatusPublisher,
    Heartbeat,
    connect,
    handler_servers,
    heartbeat_from,
)

pytestmark = pytest.mark.openstack


@pytest.fixture(scope="session")
def handler_server(openstack_cloud: Any) -> Iterator[Any]:
    """An ACTIVE server without ports (fake driver, networks='none') in project handler."""
    region = OpenStackConfig(config_files=[openstack_cloud.clouds_yaml]).get_one(
        cloud=openstack_cloud.cloud_name, api_timeout=60)  # a hung API fails, not hangs
    conn = openstack.connection.Connection(config=region)
    image = conn.image.create_image(name="handler-test-image", data=b"\0" * 1024,
                                    disk_format="raw", container_format="bare",
                                    allow_duplicates=True)
    flavor = conn.compute.find_flavor("m1.tiny", ignore_missing=False)
    server = conn.compute.create_server(name="handler-vm-test", image_id=image.id,
                                        flavor_id=flavor.id, networks="none")
    server = conn.compute.wait_for_server(server, status="ACTIVE", wait=120)
    yield server
    conn.compute.delete_server(server)
    conn.compute.wait_for_delete(server, wait=60)
    conn.image.delete_image(image)


def test_application_credential_logs_in_to_the_handler_project(openstack_cloud: Any,
                                                               cloud_env: str) -> None:
    clouds_yaml = Path(openstack_cloud.clouds_yaml)
    assert stat.S_IMODE(clouds_yaml.stat().st_mode) == 0o600
    entry = json.loads(clouds_yaml.read_text())["clouds"][cloud_env]
    assert entry["auth_type"] == "v3applicationcredential"
    conn = connect(cloud_env)
    token = conn.authorize()
    assert token
    project = conn.identity.get_project(conn.current_project_id)
    assert project.name == "handler"
    # The secret went to clouds.yaml only: not into the container's log or state file.
    secret = entry["auth"]["application_credential_secret"]
    for path in Path(openstack_cloud.log_path).parent.glob("*"):
        if path.is_file():
            assert secret not in path.read_text(errors="replace"), path
    # Every API the daemon and the openstack_vm role use is in the catalog and answers.
    assert list(conn.network.networks(name="public"))
    assert conn.compute.find_flavor("m1.tiny", ignore_missing=False).vcpus == 1
    assert list(conn.image.images()) is not None


def test_heartbeat_appears_in_server_metadata_and_status_cloud_shows_it(
        cloud_env: str, handler_server: Any) -> None:
    def beat(state: str = "running") -> Heartbeat:
        return heartbeat_from(state=state, version="0.1.0",
                              counters={"videos_ok": 5, "videos_failed": 1},
                              last_error="videos/x.mp4: no video stream", interval_s=60)

    publisher = CloudStatusPublisher(connect=lambda: connect(cloud_env), server=handler_server.id,
                                     snapshot=beat)
    assert publisher.publish_once(), publisher.problem
    conn = openstack.connect(cloud=cloud_env, api_timeout=60)
    metadata = conn.compute.get_server(handler_server.id).metadata
    assert metadata["handler_state"] == "running"
    assert (metadata["handler_processed"], metadata["handler_failed"]) == ("5", "1")
    assert metadata["handler_last_error"] == "videos/x.mp4: no video stream"
    # `status --cloud` lists it with the heartbeat's age.
    out = io.StringIO()
    with redirect_stdout(out):
        assert main(["status", "--cloud", cloud_env]) == 0
    text = out.getvalue()
    print(text)
    line = next(row for row in text.splitlines() if row.startswith("handler-vm-test"))
    assert handler_server.id in line and "ACTIVE" in line and "running" in line
    assert " ago" in line and "stale" not in line
    assert publisher.stop(beat("stopped")) is True
    assert conn.compute.get_server(handler_server.id).metadata["handler_state"] == "stopped"


def test_daemon_publishes_its_work_to_its_server(
        cloud_env: str, handler_server: Any, tmp_path: Path, queues: Any, sqs: Any,
        fake_lambda: Any) -> None:
    # GIVEN the daemon configured with the container's cloud and its server (by name)
    settings = load_settings(
        None, env={}, input_queue_url=queues.input, output_queue_url=queues.output,
        function_name=FUNCTION, results_dir=str(tmp_path / "results"),
        state_dir=str(tmp_path / "state"), wait_time_s=1, grace_period_s=5,
        visibility_timeout_s=30, metadata_url="", cloud_name=cloud_env,
        cloud_server=handler_server.name, cloud_heartbeat_interval_s=1)
    handler = Handler(settings)
    # WHEN it processes videos and stops
    code, logs = run_handler(handler, sqs=sqs, queues=queues)
    # THEN the work is done and the server's metadata says what the daemon did
    assert code is ExitCode.OK and queue_counts(sqs, queues.input) == (0, 0)
    assert not [e for e in logs if e["event"] == "cloud_status.unavailable"]
    (server,) = [s for s in handler_servers(connect(cloud_env)) if s.id == handler_server.id]
    assert server.value("state") == "stopped"
    assert server.value("processed") == str(VIDEOS) and server.value("failed") == "0"
    assert server.value("interval_s") == "1"
    age = server.age_s(datetime.now(UTC))
    assert age is not None and age < 60
