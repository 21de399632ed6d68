"""The daemon with its OpenStack side switched on: the identity from a metadata service, and a
heartbeat that fails in each way the cloud can fail (unreachable, refused, server gone) while the
daemon keeps processing videos on the real moto server."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import structlog
from conftest import META_DATA, Canned, CannedServer, app_credential_cloud, closed_port
from daemon_helpers import FUNCTION, queue_counts, s3_event
from openstack import exceptions as sdk_exceptions
from test_cloud_status import FakeConnection

from openstack_handler.daemon import handler as daemon_module
from openstack_handler.daemon.exit_codes import ExitCode
from openstack_handler.daemon.handler import Handler
from openstack_handler.daemon.settings import load_settings

VIDEOS = 3


def run_handler(handler: Handler, *, sqs: Any, queues: Any) -> tuple[ExitCode, list[dict]]:
    """Run *handler* in a thread, feed it VIDEOS events, wait until all are processed, stop it."""
    outcome: list[ExitCode] = []
    with structlog.testing.capture_logs() as logs:
        thread = threading.Thread(target=lambda: outcome.append(
            handler.run(install_signals=False)), daemon=True)
        thread.start()
        for i in range(VIDEOS):
            sqs.send_message(QueueUrl=queues.input,
                             MessageBody=json.dumps(s3_event("videos", f"clip {i}.mp4",
                                                             etag=f"e{i}")))
        deadline = time.monotonic() + 30
        while handler.consumer.stats.succeeded < VIDEOS and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(1.5)  # a few heartbeat intervals go by, failing
        handler.request_stop()
        thread.join(timeout=30)
    assert outcome, "the handler did not stop"
    return outcome[0], logs


@pytest.fixture()
def metadata_service(canned_server: CannedServer) -> str:
    path = "/openstack/latest/meta_data.json"
    canned_server.routes[("GET", path)] = Canned(200, json.dumps(META_DATA).encode())
    return canned_server.url + path


@pytest.fixture()
def make_handler(tmp_path: Path, queues: Any, fake_lambda: Any, metadata_service: str):
    def factory(**overrides: Any) -> Handler:
        values: dict[str, Any] = {
            "input_queue_url": queues.input, "output_queue_url": queues.output,
            "function_name": FUNCTION, "results_dir": tmp_path / "results",
            "state_dir": tmp_path / "state", "wait_time_s": 1, "grace_period_s": 5,
            "visibility_timeout_s": 30, "metadata_url": metadata_service,
            "cloud_name": "handler", "cloud_heartbeat_interval_s": 0.3}
        values.update(overrides)
        return Handler(load_settings(None, env={}, **values))

    return factory


def _problems(logs: list[dict]) -> list[str]:
    return [e["problem"] for e in logs if e["event"] == "cloud_status.unavailable"]


@pytest.mark.parametrize("case", ["cloud_unreachable", "auth_failed", "server_not_found"])
def test_daemon_keeps_processing_videos_whatever_the_cloud_does(
        case: str, make_handler, clouds_env, refusing_keystone: CannedServer, sqs: Any,
        queues: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    # GIVEN a heartbeat whose cloud fails in one way
    if case == "cloud_unreachable":
        clouds_env({"handler": app_credential_cloud(f"http://127.0.0.1:{closed_port()}/v3")})
    elif case == "auth_failed":
        clouds_env({"handler": app_credential_cloud(refusing_keystone.url + "/v3")})
    else:
        conn = FakeConnection()
        conn.compute.find_server.side_effect = sdk_exceptions.NotFoundException("No Server found")
        monkeypatch.setattr(daemon_module, "connect", lambda cloud, api_timeout_s: conn)
    handler = make_handler()
    # WHEN videos arrive
    code, logs = run_handler(handler, sqs=sqs, queues=queues)
    # THEN every one is processed and acknowledged, the daemon stops cleanly, and the cloud's
    # problem is logged once for the whole run (not once per heartbeat)
    assert code is ExitCode.OK
    assert handler.consumer.stats.succeeded == VIDEOS
    assert queue_counts(sqs, queues.input) == (0, 0)
    assert _problems(logs) == [case]
    assert handler.cloud_status is not None and handler.cloud_status.server == META_DATA["uuid"]
    assert handler.identity is not None and handler.identity.name == "handler-vm-1"


def test_heartbeat_tracks_the_work_and_ends_stopped(make_handler, sqs: Any, queues: Any,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    conn = FakeConnection()
    monkeypatch.setattr(daemon_module, "connect", lambda cloud, api_timeout_s: conn)
    handler = make_handler(cloud_server="handler-vm-1")
    code, logs = run_handler(handler, sqs=sqs, queues=queues)
    assert code is ExitCode.OK and _problems(logs) == []
    published = [call.kwargs for call in conn.compute.set_server_metadata.call_args_list]
    states = [p["handler_state"] for p in published]
    assert states[-1] == "stopped" and "running" in states
    assert published[-1]["handler_processed"] == str(VIDEOS)
    assert published[-1]["handler_failed"] == "0"
    conn.compute.find_server.assert_called_once_with("handler-vm-1", ignore_missing=False,
                                                     details=False)


def test_no_server_known_means_no_heartbeat(make_handler, sqs: Any, queues: Any) -> None:
    # Off-cloud (no metadata service) and no cloud_server: the heartbeat is off, said once.
    handler = make_handler(metadata_url=f"http://127.0.0.1:{closed_port()}/x")
    code, logs = run_handler(handler, sqs=sqs, queues=queues)
    assert code is ExitCode.OK and handler.cloud_status is None
    assert [e["event"] for e in logs].count("cloud_status.off") == 1
    assert handler.consumer.stats.succeeded == VIDEOS
