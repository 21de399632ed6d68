"""The command line and the daemon process: exit codes, status table, real signals, imports."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from daemon_helpers import queue_counts, s3_event
from fake_lambda import FakeLambda, ok

from openstack_handler.cli import main
from openstack_handler.daemon.exit_codes import ExitCode
from openstack_handler.daemon.state import StateDB

REPO = Path(__file__).resolve().parents[2]


def test_importing_the_cli_never_loads_torch_lambda_image_or_moto() -> None:
    code = ("import sys, openstack_handler.cli, openstack_handler.daemon.handler, openstack_handler.daemon.status;"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('torch', 'lambda_image', 'moto', 'localcloud')))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                         check=True, timeout=60)
    assert out.stdout.strip() == "[]"


def test_bad_config_exits_78(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--config", str(tmp_path / "missing.toml")]) == ExitCode.CONFIG_ERROR == 78
    assert "configuration error" in capsys.readouterr().err
    (tmp_path / "bad.toml").write_text('input_queue_url = "a"\nconcurrency = -1\n')
    assert main(["status", "--config", str(tmp_path / "bad.toml")]) == 78


def test_check_config_accepts_a_good_file_and_rejects_a_bad_one(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = tmp_path / "good.toml"
    good.write_text('input_queue_url = "http://q/in"\noutput_queue_url = "http://q/out"\n'
                    'function_name = "face-recognition"\nresults_dir = "/srv/results"\n')
    assert main(["check-config", "--config", str(good)]) == 0
    assert "ok" in capsys.readouterr().out
    bad = tmp_path / "bad.toml"
    bad.write_text(good.read_text() + "concurrency = 0\n")
    assert main(["check-config", "--config", str(bad)]) == ExitCode.CONFIG_ERROR
    assert "concurrency" in capsys.readouterr().err


def test_usage_errors_exit_2() -> None:
    with pytest.raises(SystemExit) as info:
        main(["run"])
    assert info.value.code == ExitCode.USAGE


def write_config(tmp_path: Path, queues: Any, **extra: Any) -> Path:
    values = {"input_queue_url": queues.input, "output_queue_url": queues.output,
              "function_name": "recognise", "results_dir": str(tmp_path / "results"),
              "state_dir": str(tmp_path / "state"), "concurrency": 2, "wait_time_s": 1,
              "visibility_timeout_s": 30, "grace_period_s": 10, "function_timeout_s": 30,
              "invoke_backoff_initial_s": 0.05, "invoke_backoff_max_s": 0.2, **extra}
    lines = [f"{k} = {json.dumps(v)}" for k, v in values.items()]
    path = tmp_path / "handler.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_status_shows_queue_depths_counts_and_last_error(tmp_path: Path, sqs, queues,
                                                         capsys: pytest.CaptureFixture[str]
                                                         ) -> None:
    config = write_config(tmp_path, queues)
    assert main(["status", "--config", str(config)]) == 0
    assert "no state yet" in capsys.readouterr().out
    for _ in range(3):
        sqs.send_message(QueueUrl=queues.input, MessageBody="{}")
    sqs.send_message(QueueUrl=queues.input_dlq, MessageBody="{}")
    with StateDB(tmp_path / "state" / "state.sqlite3") as state:
        state.incr("videos_ok", 5)
        state.incr("videos_failed", 1)
        state.record_error("function", "dir/v.mp4: RuntimeError: model broke")
    assert main(["status", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    rows = {line.split("  ")[0].strip(): line.split() for line in out.splitlines() if line}
    assert rows["input"][1:4] == ["3", "0", "0"]
    assert rows["input DLQ"][2] == "1"  # found through the input queue's redrive policy
    assert rows["output"][1] == "0" and "output DLQ" in rows
    assert "videos processed" in out and " 5" in out
    assert "RuntimeError: model broke" in out and "[function]" in out


def _child_env() -> dict[str, str]:
    # The repository on the path explicitly: the child runs in a temp dir, and an editable
    # install made before a package existed does not map it.
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


class DaemonProcess:
    """``python -m openstack_handler run`` under a watchdog, its JSON log lines collected."""

    def __init__(self, config: Path, tmp_path: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "openstack_handler", "run", "--config", str(config)],
            cwd=tmp_path, env=_child_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True)
        self.lines: list[dict[str, Any]] = []
        self.raw: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.raw.append(line)
            try:
                self.lines.append(json.loads(line))
            except ValueError:
                pass

    def events(self) -> list[str]:
        return [line.get("event", "") for line in list(self.lines)]

    def wait_for(self, event: str, timeout: float = 20.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                if line.get("event") == event:
                    return line
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"no {event!r} log line; output:\n{''.join(self.raw)}")

    def wait(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        finally:
            self._reader.join(timeout=5)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture()
def daemon_factory(tmp_path: Path, queues, fake_lambda: FakeLambda):
    started: list[DaemonProcess] = []

    def factory(**extra: Any) -> DaemonProcess:
        process = DaemonProcess(write_config(tmp_path, queues, **extra), tmp_path)
        started.append(process)
        return process

    yield factory
    for process in started:  # the watchdog: never leave a daemon behind
        process.kill()


def test_sigterm_finishes_in_flight_work_and_exits_0(daemon_factory, sqs, queues, tmp_path: Path,
                                                     fake_lambda: FakeLambda) -> None:
    fake_lambda.behaviour = lambda name, payload: (time.sleep(1.5), ok(payload))[1]
    daemon = daemon_factory()
    daemon.wait_for("handler.ready")
    # GIVEN a result waiting on the output queue and a video being processed
    sqs.send_message(QueueUrl=queues.output, MessageBody=json.dumps({
        "schema": 1, "status": "ok", "bucket": "videos", "key": "earlier clip.mp4", "etag": "e",
        "csv": "president_biden,,\n", "request_id": "r"}))
    sqs.send_message(QueueUrl=queues.input,
                     MessageBody=json.dumps(s3_event("videos", "dir/slow clip.mp4")))
    fake_lambda.wait_started(timeout=20)
    # WHEN systemd sends SIGTERM mid-invocation
    daemon.proc.send_signal(signal.SIGTERM)
    # THEN the invocation completes, its message is deleted, and the exit status is 0
    assert daemon.wait(timeout=15) == 0
    events = daemon.events()
    assert "handler.stopping" in events and "handler.stopped" in events
    processed = next(line for line in daemon.lines if line.get("event") == "video.processed")
    assert processed["key"] == "dir/slow clip.mp4" and processed["elapsed_ms"] >= 1000
    assert processed["message_id"]  # bound as context
    assert queue_counts(sqs, queues.input) == (0, 0)
    assert (tmp_path / "results" / "earlier clip.csv").read_text() == "president_biden,,\n"


def test_second_signal_exits_at_once(daemon_factory, sqs, queues,
                                     fake_lambda: FakeLambda) -> None:
    fake_lambda.behaviour = lambda name, payload: (time.sleep(20), ok(payload))[1]
    daemon = daemon_factory()
    daemon.wait_for("handler.ready")
    sqs.send_message(QueueUrl=queues.input, MessageBody=json.dumps(s3_event("videos", "v.mp4")))
    fake_lambda.wait_started(timeout=20)
    daemon.proc.send_signal(signal.SIGINT)
    daemon.wait_for("handler.stopping")
    started = time.monotonic()
    daemon.proc.send_signal(signal.SIGTERM)
    assert daemon.wait(timeout=5) == ExitCode.INTERRUPTED
    assert time.monotonic() - started < 3
    assert queue_counts(sqs, queues.input) == (0, 1)  # not deleted: it will be redelivered


def test_grace_period_expiry_exits_tempfail(daemon_factory, sqs, queues,
                                            fake_lambda: FakeLambda) -> None:
    fake_lambda.behaviour = lambda name, payload: (time.sleep(20), ok(payload))[1]
    daemon = daemon_factory(grace_period_s=1)
    daemon.wait_for("handler.ready")
    sqs.send_message(QueueUrl=queues.input, MessageBody=json.dumps(s3_event("videos", "v.mp4")))
    fake_lambda.wait_started(timeout=20)
    daemon.proc.send_signal(signal.SIGTERM)
    assert daemon.wait(timeout=10) == ExitCode.TEMPFAIL
    assert "handler.grace_expired" in daemon.events()
    assert queue_counts(sqs, queues.input) == (0, 1)


def test_missing_queue_exits_config_error(daemon_factory, queues) -> None:
    queues.input = queues.input.rsplit("/", 1)[0] + "/no-such-queue"
    daemon = daemon_factory()
    assert daemon.wait(timeout=30) == ExitCode.CONFIG_ERROR
    assert "startup.queue_unusable" in daemon.events()


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "State:\tZ" not in state


def test_daemonize_detaches_writes_pidfile_and_stops_on_sigterm(tmp_path: Path, queues,
                                                                fake_lambda: FakeLambda) -> None:
    config = write_config(tmp_path, queues)
    pidfile, logfile = tmp_path / "handler.pid", tmp_path / "handler.log"
    launcher = subprocess.run(
        [sys.executable, "-m", "openstack_handler", "run", "--config", str(config),
         "--daemonize", "--pidfile", str(pidfile), "--log-file", str(logfile)],
        check=False, cwd=tmp_path, env=_child_env(), capture_output=True, text=True,
        timeout=30)
    assert launcher.returncode == 0, launcher.stderr
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not (
            logfile.exists() and '"handler.ready"' in logfile.read_text()):
        time.sleep(0.1)
    pid = int(pidfile.read_text().split()[0])
    try:
        assert _alive(pid)
        assert '"handler.ready"' in logfile.read_text()
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(pid)
    finally:
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)
    assert '"handler.stopped"' in logfile.read_text()
    assert not pidfile.exists()


def test_status_exits_69_with_one_line_when_no_queue_can_be_read(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
        ) -> None:
    # GIVEN the local cloud's config in a shell with no credentials at all (issue 18, item 3)
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.aws
    config = tmp_path / "handler.toml"
    config.write_text('input_queue_url = "http://127.0.0.1:5000/1/in"\n'
                      'output_queue_url = "http://127.0.0.1:5000/1/out"\n'
                      'function_name = "f"\nendpoint_url = "http://127.0.0.1:5000"\n'
                      f'state_dir = "{tmp_path / "state"}"\n')
    # WHEN a monitoring script runs status THEN it exits 69 and says why on one stderr line
    assert main(["status", "--config", str(config)]) == ExitCode.UNAVAILABLE == 69
    captured = capsys.readouterr()
    assert "NoCredentialsError" in captured.out  # the table still shows every row
    [line] = captured.err.splitlines()
    assert line.startswith("openstack-handler status: 2 of 2 queue(s) could not be read "
                           "(input, output): no AWS credentials to call SQS at "
                           f"http://127.0.0.1:5000 (endpoint_url from {config})")


def test_status_names_the_dead_endpoint_it_tried(tmp_path: Path, queues,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    from lambda_service.net import free_port

    dead = f"http://127.0.0.1:{free_port()}"
    config = write_config(tmp_path, queues, endpoint_url=dead)
    assert main(["status", "--config", str(config)]) == 69
    err = capsys.readouterr().err
    assert f"cannot reach SQS at {dead} (endpoint_url from {config}): EndpointConnectionError" \
        in err and len(err.splitlines()) == 1


def test_forget_removes_the_dedupe_record_and_status_shows_the_last_duplicate(
        tmp_path: Path, queues, capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path, queues)
    assert main(["forget", "--config", str(config), "clip.mp4"]) == ExitCode.FAILURE  # no DB yet
    assert "no state DB" in capsys.readouterr().err
    with StateDB(tmp_path / "state" / "state.sqlite3") as state:
        state.mark_processed("videos", "dir/my clip.mp4", "e1", status="ok")
        state.mark_processed("other", "dir/my clip.mp4", "e2", status="ok")
        state.record_duplicate("videos", "dir/my clip.mp4", "e1", "already processed at X")
    # GIVEN a dropped duplicate THEN status shows it with the command that reprocesses it
    assert main(["status", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "last duplicate dropped: " in out and "s3://videos/dir/my clip.mp4" in out
    assert f"openstack-handler forget --config {config} 'dir/my clip.mp4'" in out
    # WHEN the user forgets the key (in one bucket) THEN only that record goes
    assert main(["forget", "--config", str(config), "--bucket", "videos", "dir/my clip.mp4"]) == 0
    assert "dir/my clip.mp4: forgotten (s3://videos, eTag e1, status ok" in capsys.readouterr().out
    with StateDB(tmp_path / "state" / "state.sqlite3") as state:
        assert not state.is_processed("videos", "dir/my clip.mp4", "e1")
        assert state.is_processed("other", "dir/my clip.mp4", "e2")
    assert main(["forget", "--config", str(config), "--bucket", "videos", "dir/my clip.mp4"]) == 1
    assert "not remembered" in capsys.readouterr().out


def test_check_config_connect_says_which_queue_points_at_nothing(
        tmp_path: Path, queues, capsys: pytest.CaptureFixture[str]) -> None:
    # GIVEN a config that loads fine but names a queue that does not exist
    queues.output = queues.output.rsplit("/", 1)[0] + "/no-such-queue"
    config = write_config(tmp_path, queues)
    assert main(["check-config", "--config", str(config)]) == 0  # offline: it cannot know
    capsys.readouterr()
    # WHEN checked with --connect THEN it names that queue and exits 78
    assert main(["check-config", "--config", str(config), "--connect"]) == 78
    out = capsys.readouterr().out
    lines = {line.split()[0]: line for line in out.splitlines() if line.startswith("  ")}
    assert lines["input_queue_url"].endswith("ok: 0 visible")
    assert "does not exist: AWS.SimpleQueueService.NonExistentQueue" in lines["output_queue_url"]


def test_check_config_connect_reports_an_unreachable_endpoint_with_69(
        tmp_path: Path, queues, capsys: pytest.CaptureFixture[str]) -> None:
    from lambda_service.net import free_port

    dead = f"http://127.0.0.1:{free_port()}"
    config = write_config(tmp_path, queues, endpoint_url=dead)
    assert main(["check-config", "--config", str(config), "--connect"]) == 69
    out = capsys.readouterr().out
    assert f"unreachable: cannot reach SQS at {dead} (endpoint_url from {config})" in out
    assert f"unreachable: cannot reach Lambda at {dead} (endpoint_url from {config})" in out
