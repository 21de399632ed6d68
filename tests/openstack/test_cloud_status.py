"""The heartbeat publisher's contract and error paths (openstacksdk's own fakes, and real sockets
for an unreachable cloud and a Keystone that refuses): it never raises, logs each problem once,
and stops within its bound."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
import structlog
from conftest import CannedServer, app_credential_cloud, closed_port
from openstack import exceptions as sdk_exceptions
from openstack.compute import compute_service
from openstack.compute.v2 import server as server_resource
from openstack.test import fakes

from openstack_handler.private_cloud.cloud_status import (
    MAX_VALUE_CHARS,
    CloudStatusPublisher,
    HandlerServer,
    Heartbeat,
    connect,
    handler_servers,
    heartbeat_from,
    metadata_prefix,
    render_handler_servers,
)

NOW = datetime(2025, 5, 20, 12, 0, 0, tzinfo=UTC)


def beat(state: str = "running", **overrides: Any) -> Heartbeat:
    values: dict[str, Any] = {"state": state, "version": "0.1.0", "processed": 7, "failed": 1,
                              "last_error": None, "updated_at": NOW, "interval_s": 60.0}
    values.update(overrides)
    return Heartbeat(**values)


class FakeConnection:
    """A Connection whose compute proxy is openstacksdk's autospecced fake."""

    def __init__(self) -> None:
        self.compute = fakes.generate_fake_proxy(compute_service.ComputeService)
        self.server = fakes.generate_fake_resource(server_resource.Server, name="handler-vm-1")
        self.compute.find_server.return_value = self.server


def events(logs: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [entry for entry in logs if entry["event"] == name]


def test_metadata_is_prefixed_strings_of_at_most_255_chars() -> None:
    metadata = beat(last_error="x" * 1000 + "\nsecond line").as_metadata()
    assert metadata == {
        "handler_state": "running", "handler_version": "0.1.0", "handler_processed": "7",
        "handler_failed": "1", "handler_last_error": metadata["handler_last_error"],
        "handler_updated_at": "2025-05-20T12:00:00Z", "handler_interval_s": "60"}
    assert len(metadata["handler_last_error"]) == MAX_VALUE_CHARS
    assert "\n" not in metadata["handler_last_error"]
    assert all(isinstance(v, str) and len(v) <= MAX_VALUE_CHARS for v in metadata.values())


def test_heartbeat_counts_come_from_the_state_counters() -> None:
    hb = heartbeat_from(state="running", version="v", counters={"videos_ok": 3, "videos_failed": 2,
                                                                "duplicates": 9},
                        last_error="boom", interval_s=30, clock=lambda: NOW.timestamp())
    assert (hb.processed, hb.failed, hb.last_error, hb.updated_at) == (3, 2, "boom", NOW)
    assert hb.split == "" and "handler_split" not in hb.as_metadata()  # one target: no split
    two = heartbeat_from(state="running", version="v", interval_s=30, last_error=None,
                         counters={"videos_ok": 5, "target.private.invocations": 4,
                                   "target.private.failures": 1, "target.aws.invocations": 2})
    assert two.as_metadata()["handler_split"] == "private=4,aws=2"


def test_publishes_to_the_server_found_once() -> None:
    conn = FakeConnection()
    publisher = CloudStatusPublisher(connect=lambda: conn, server="handler-vm-1",
                                     snapshot=beat)
    assert publisher.publish_once() and publisher.publish_once()
    conn.compute.find_server.assert_called_once_with("handler-vm-1", ignore_missing=False,
                                                     details=False)
    conn.compute.set_server_metadata.assert_called_with(conn.server.id, **beat().as_metadata())
    assert conn.compute.set_server_metadata.call_count == 2 and publisher.problem is None


def test_server_not_found_is_logged_once_and_looked_up_again() -> None:
    conn = FakeConnection()
    conn.compute.find_server.side_effect = sdk_exceptions.NotFoundException("No Server found")
    publisher = CloudStatusPublisher(connect=lambda: conn, server="gone", snapshot=beat)
    with structlog.testing.capture_logs() as logs:
        results = [publisher.publish_once() for _ in range(3)]
        conn.compute.find_server.side_effect = None  # the server is back (recreated)
        assert publisher.publish_once()
    assert results == [False, False, False]
    assert [e["problem"] for e in events(logs, "cloud_status.unavailable")] == ["server_not_found"]
    assert events(logs, "cloud_status.recovered")[0]["after"] == "server_not_found"
    assert conn.compute.find_server.call_count == 4


def test_a_changed_problem_is_logged_again() -> None:
    conn = FakeConnection()
    conn.compute.set_server_metadata.side_effect = sdk_exceptions.ForbiddenException("policy")
    publisher = CloudStatusPublisher(connect=lambda: conn, server="s", snapshot=beat)
    with structlog.testing.capture_logs() as logs:
        publisher.publish_once()
        conn.compute.set_server_metadata.side_effect = sdk_exceptions.NotFoundException("gone")
        publisher.publish_once()
        publisher.publish_once()
    assert [e["problem"] for e in events(logs, "cloud_status.unavailable")] == [
        "forbidden", "server_not_found"]


def test_unreachable_cloud_is_a_logged_problem_not_an_exception(clouds_env) -> None:
    clouds_env({"down": app_credential_cloud(f"http://127.0.0.1:{closed_port()}/v3")})
    publisher = CloudStatusPublisher(connect=lambda: connect("down", api_timeout_s=2),
                                     server="s", snapshot=beat)
    with structlog.testing.capture_logs() as logs:
        started = time.monotonic()
        assert publisher.publish_once() is False
        assert publisher.publish_once() is False
    assert time.monotonic() - started < 5
    assert [e["problem"] for e in events(logs, "cloud_status.unavailable")] == [
        "cloud_unreachable"]


def test_refused_credential_is_auth_failed(clouds_env, refusing_keystone: CannedServer) -> None:
    clouds_env({"refusing": app_credential_cloud(refusing_keystone.url + "/v3")})
    publisher = CloudStatusPublisher(connect=lambda: connect("refusing", api_timeout_s=2),
                                     server="s", snapshot=beat)
    with structlog.testing.capture_logs() as logs:
        assert publisher.publish_once() is False
    assert publisher.problem == "auth_failed"
    assert ("POST", "/v3/auth/tokens") in refusing_keystone.requests
    (entry,) = events(logs, "cloud_status.unavailable")
    assert "not-a-real-secret" not in repr(entry)


def test_unknown_cloud_name_is_cloud_not_configured(clouds_env) -> None:
    clouds_env({})
    publisher = CloudStatusPublisher(connect=lambda: connect("missing"), server="s",
                                     snapshot=beat)
    assert publisher.publish_once() is False and publisher.problem == "cloud_not_configured"


def test_thread_survives_unexpected_errors_and_stop_publishes_the_final_state() -> None:
    conn = FakeConnection()
    calls: list[str] = []

    def set_metadata(server_id: str, **metadata: str) -> None:
        calls.append(metadata["handler_state"])
        if len(calls) == 1:
            raise RuntimeError("a bug in a library")

    conn.compute.set_server_metadata.side_effect = set_metadata
    publisher = CloudStatusPublisher(connect=lambda: conn, server="s", snapshot=beat,
                                     interval_s=0.05)
    publisher.start()
    deadline = time.monotonic() + 5
    while len(calls) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert publisher.stop(beat("stopped")) is True
    assert calls[0] == "running" and calls[-1] == "stopped" and len(calls) >= 3


def test_stop_is_bounded_when_the_cloud_hangs() -> None:
    conn = FakeConnection()
    release = threading.Event()
    conn.compute.set_server_metadata.side_effect = lambda *a, **k: release.wait(30)
    publisher = CloudStatusPublisher(connect=lambda: conn, server="s", snapshot=beat)
    started = time.monotonic()
    with structlog.testing.capture_logs() as logs:
        assert publisher.stop(beat("stopped"), timeout_s=0.3) is False
    assert time.monotonic() - started < 1.0
    assert events(logs, "cloud_status.final_publish_timed_out")
    release.set()


def test_status_table_shows_age_and_marks_stale_heartbeats() -> None:
    fresh = HandlerServer(name="vm-a", id="id-a", status="ACTIVE",
                          metadata=beat().as_metadata())
    old = beat(updated_at=NOW - timedelta(minutes=10), last_error="results/x.csv: disk full")
    stale = HandlerServer(name="vm-b", id="id-b", status="ACTIVE", metadata=old.as_metadata())
    stopped = HandlerServer(name="vm-c", id="id-c", status="SHUTOFF", metadata=beat(
        "stopped", updated_at=NOW - timedelta(hours=3)).as_metadata())
    text = render_handler_servers([fresh, stale, stopped], cloud="handler",
                                  now=lambda: NOW + timedelta(seconds=14))
    lines = text.splitlines()
    assert lines[0] == "cloud handler: 3 handler server(s)"
    assert lines[1].split() == ["SERVER", "ID", "NOVA", "REPLICA", "HANDLER", "VERSION",
                                "PROCESSED", "FAILED", "SPLIT", "HEARTBEAT", "LAST", "ERROR"]
    assert lines[2].split()[:11] == ["vm-a", "id-a", "ACTIVE", "-", "running", "0.1.0", "7",
                                     "1", "-", "14", "s"]
    assert "running (stale)" in lines[3] and "10 min ago" in lines[3]
    assert lines[3].endswith("results/x.csv: disk full")
    assert "stopped" in lines[4] and "stale" not in lines[4] and "3.0 h ago" in lines[4]
    assert render_handler_servers([], cloud="c").startswith("cloud c: no server")


def test_cli_status_cloud_reports_an_unreachable_cloud(clouds_env, capsys) -> None:
    from openstack_handler.cli import main

    clouds_env({"down": app_credential_cloud(f"http://127.0.0.1:{closed_port()}/v3")})
    assert main(["status", "--cloud", "down"]) == 69
    assert "cloud_unreachable" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["status"], ["status", "--cloud"]])
def test_cli_status_needs_config_or_cloud(argv: list[str]) -> None:
    from openstack_handler.cli import main

    with mock.patch("sys.stderr"):
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse: a flag without its value
            code = int(exc.code or 0)
    assert code == 2


def test_importing_the_daemon_does_not_load_openstacksdk(tmp_path: Path) -> None:
    import subprocess
    import sys

    code = ("import sys, openstack_handler.cli, openstack_handler.daemon.handler;"
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'openstack', 'keystoneauth1'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60, cwd=tmp_path)
    assert out.stdout.strip() == "[]"


def test_replicas_on_one_server_are_listed_one_row_each() -> None:
    # GIVEN a server whose handler runs as replicas 1, 2 and 10: 2 is stopping, 10 went silent
    metadata = {**beat().as_metadata(metadata_prefix("1")),
                **beat("stopping").as_metadata(metadata_prefix("2")),
                **beat(updated_at=NOW - timedelta(hours=1)).as_metadata(metadata_prefix("10")),
                "handler_last_error_note": "not a state key", "other_state": "x"}
    conn = FakeConnection()
    conn.compute.servers.return_value = [fakes.generate_fake_resource(
        server_resource.Server, name="vm-a", id="id-a", status="ACTIVE", metadata=metadata)]
    # WHEN the operator lists the cloud's handlers
    servers = handler_servers(conn)
    text = render_handler_servers(servers, cloud="c", now=lambda: NOW)
    # THEN each replica is a row of its own, in numeric order, with its own state
    assert [(s.replica, s.value("state")) for s in servers] == [
        ("1", "running"), ("2", "stopping"), ("10", "running")]
    lines = text.splitlines()
    assert lines[0] == "cloud c: 1 handler server(s)"
    assert [line.split()[3:5] for line in lines[2:]] == [
        ["1", "running"], ["2", "stopping"], ["10", "running"]]
    assert "stale" in lines[4] and "stale" not in lines[2] + lines[3]
