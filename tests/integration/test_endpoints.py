"""The config `local up` writes reaches the local cloud and nothing else — from a shell with no
AWS variables at all and real-looking credentials in ~/.aws (issue 18, item 1)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from integration_helpers import REPO, Pipeline
from polling import wait_for

pytestmark = pytest.mark.integration


class Recorder:
    """An HTTP server that records every request it gets (and fails it)."""

    def __init__(self) -> None:
        self.requests: list[str] = []
        recorder = self

        class _Handler(BaseHTTPRequestHandler):
            def _record(self) -> None:
                recorder.requests.append(f"{self.command} {self.headers.get('Host')}{self.path}")
                self.send_response(500)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_GET = do_POST = do_PUT = _record

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture()
def recorder() -> Iterator[Recorder]:
    server = Recorder()
    yield server
    server.close()


@pytest.fixture()
def fake_home(tmp_path: Path, recorder: Recorder) -> Path:
    """~/.aws with credentials, and a profile whose endpoint_url is the recorder: whatever
    boto3 would reach through its own configuration lands there, where the test sees it."""
    home = tmp_path / "home"
    (home / ".aws").mkdir(parents=True)
    (home / ".aws" / "credentials").write_text(
        "[default]\naws_access_key_id = fake-key-id-for-tests\n"
        "aws_secret_access_key = fake-secret-for-tests\n")
    (home / ".aws" / "config").write_text(
        f"[default]\nregion = us-east-1\nendpoint_url = {recorder.url}\n")
    return home


def clean_env(home: Path, **extra: str) -> dict[str, str]:
    """A new shell's environment: no AWS_* variable at all, HOME with the fake ~/.aws."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    return {**env, "HOME": str(home), "PYTHONPATH": str(REPO), **extra}


def test_the_trap_is_armed_boto3_alone_would_reach_the_recorder(fake_home: Path,
                                                                recorder: Recorder) -> None:
    # Without this, the test below could pass because nothing would ever have reached anywhere.
    code = "import boto3; boto3.client('sqs').list_queues()"
    proc = subprocess.run([sys.executable, "-c", code], env=clean_env(fake_home),
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode != 0
    assert recorder.requests, "boto3 did not use the fake profile's endpoint"


def test_a_local_up_config_in_a_shell_without_exports_reaches_only_the_local_cloud(
        pipeline: Pipeline, course_data: Path, course_records: dict[str, str],
        fake_home: Path, recorder: Recorder) -> None:
    # GIVEN the config `local up` writes, and a shell that has none of its exports
    assert "endpoint_url" in pipeline.config.read_text()
    env = clean_env(fake_home, OPENSTACK_HANDLER_WAIT_TIME_S="1")
    assert not any(k.startswith("AWS_") for k in env)
    with pipeline.log_path.open("ab") as log:
        daemon = subprocess.Popen(
            [sys.executable, "-m", "openstack_handler", "run", "--config", str(pipeline.config),
             "--log-format", "json"], env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            # WHEN a video is uploaded (by the test, with its own explicit client)
            pipeline.s3.upload_file(str(course_data / "videos" / "test_4.mp4"), pipeline.bucket,
                                    "endpoints/test_4.mp4")
            result = pipeline.results / "endpoints" / "test_4.csv"
            wait_for(lambda: result.exists() or daemon.poll() is not None, timeout_s=120,
                     what="the result file")
        finally:
            if daemon.poll() is None:
                daemon.send_signal(signal.SIGTERM)
            code = daemon.wait(timeout=60)
    # THEN the daemon processed it through the local cloud and exited cleanly ...
    log_text = pipeline.log_path.read_text()
    assert code == 0, log_text[-3000:]
    assert result.read_text().splitlines()[0] == course_records["test_4.mp4"]
    # ... and nothing it did reached any other endpoint (the profile's, or AWS itself: there is
    # no internet here, so a call to AWS would have failed the startup with exit 69)
    assert recorder.requests == []
    assert pipeline.cloud.moto_url in log_text and pipeline.cloud.lambda_url in log_text


def test_check_config_connect_finds_every_queue_and_the_function(pipeline: Pipeline) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "openstack_handler", "check-config", "--config",
         str(pipeline.config), "--connect"], env=pipeline.daemon_env(), capture_output=True,
        text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    probed = [line.split()[0] for line in proc.stdout.splitlines()
              if line.startswith("  ") and " ok" in line]
    assert probed == ["input_queue_url", "output_queue_url", "input_dlq_url", "output_dlq_url",
                      "request_queue_url", "request_dlq_url", "function_name"], proc.stdout
    assert f"Lambda at {pipeline.cloud.lambda_url} (lambda_endpoint_url from " \
           f"{pipeline.config})" in proc.stdout
