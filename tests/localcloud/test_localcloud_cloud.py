"""LocalCloud end to end: moto + our Lambda endpoint, provisioned, seeded, reachable by boto3
through the endpoint variables only."""

from __future__ import annotations

import io
import json
import os
import signal
import threading
import time
import tomllib
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config

from localcloud.cloud import LocalCloud
from openstack_handler.demos.daemon_config import write_daemon_config
from openstack_handler.demos.local_up import run_local_up
from openstack_handler.provisioning.spec import ResourceSpec

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
STUDENTS = [{"id": 1, "name": "mr_bean", "major": "lawyer", "year": "freshmen"}]
CONTRACT_KEYS = {"input_queue_url", "output_queue_url", "function_name", "results_dir",
                 "state_dir", "region", "concurrency", "function_timeout_s", "wait_time_s",
                 "grace_period_s", "max_object_bytes", "input_dlq_url", "output_dlq_url",
                 "endpoint_url", "lambda_endpoint_url", "request_queue_url", "request_dlq_url",
                 "failure_queue_url"}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("inputs")
    (base / "encoding").write_bytes(b"not a real gallery")
    (base / "student_data.json").write_text(json.dumps(STUDENTS))
    return base / "encoding", base / "student_data.json"


@pytest.fixture(scope="module")
def cloud(inputs: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory,
          ) -> Iterator[LocalCloud]:
    gallery, students = inputs
    with LocalCloud(gallery=gallery, students=students, handler="tests.lambda_service.handlers:pipeline",
                    resources=ResourceSpec(prefix="lc", function_timeout_s=20),
                    work_dir=tmp_path_factory.mktemp("cloud"), pythonpath=[REPO]) as running:
        yield running


@pytest.fixture()
def client_env(cloud: LocalCloud, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    for key in [k for k in os.environ if k.startswith("AWS_")]:
        monkeypatch.delenv(key)
    for key, value in cloud.client_env().items():
        monkeypatch.setenv(key, value)
    return cloud.client_env()


def test_client_env_points_boto3_at_both_servers(cloud: LocalCloud,
                                                 client_env: dict[str, str]) -> None:
    assert client_env["AWS_ENDPOINT_URL"] == cloud.moto_url
    assert client_env["AWS_ENDPOINT_URL_LAMBDA"] == cloud.lambda_url
    assert boto3.client("lambda").meta.endpoint_url == cloud.lambda_url
    assert boto3.client("sqs").meta.endpoint_url == cloud.moto_url
    config = boto3.client("lambda").get_function(FunctionName="face-recognition")["Configuration"]
    assert config["Timeout"] == 20 and config["MemorySize"] == 2048


def test_upload_event_invoke_and_result(cloud: LocalCloud, client_env: dict[str, str],
                                        inputs: tuple[Path, Path]) -> None:
    # GIVEN a video uploaded to the input bucket
    p = cloud.provisioned
    boto3.client("s3").put_object(Bucket=p.input_bucket, Key="clips/my clip.mp4", Body=b"x" * 10)
    # WHEN the daemon's part is played: receive the S3 event and invoke the function with it
    sqs = boto3.client("sqs")
    event = None
    deadline = time.monotonic() + 10
    while event is None and time.monotonic() < deadline:
        for message in sqs.receive_message(QueueUrl=p.input_queue_url, MaxNumberOfMessages=10,
                                           WaitTimeSeconds=1).get("Messages", []):
            body = json.loads(message["Body"])
            if "Records" in body:
                event = body
    assert event is not None
    lam = boto3.client("lambda", config=Config(retries={"max_attempts": 0}, read_timeout=60))
    response = lam.invoke(FunctionName="face-recognition", Payload=json.dumps(event).encode())
    payload = json.loads(response["Payload"].read())
    # THEN the function (in its worker, talking to moto) wrote the CSV and the result message
    assert "FunctionError" not in response, payload
    [result] = payload["results"]
    assert result["key"] == "clips/my clip.mp4" and result["size"] == 10
    assert result["csv"] == "mr_bean,lawyer,freshmen\n"
    assert result["gallery"] == str(inputs[0].resolve())
    csv = boto3.client("s3").get_object(Bucket=p.output_bucket, Key="clips/my clip.csv")
    assert csv["Body"].read() == b"mr_bean,lawyer,freshmen\n"
    messages = sqs.receive_message(QueueUrl=p.output_queue_url, WaitTimeSeconds=2)["Messages"]
    assert json.loads(messages[0]["Body"])["request_id"] == result["request_id"]


def test_daemon_config_is_flat_toml_per_contract(cloud: LocalCloud, tmp_path: Path) -> None:
    path = write_daemon_config(cloud, tmp_path / "conf" / "daemon.toml", tmp_path / "results",
                                     tmp_path / "state", concurrency=3)
    settings = tomllib.loads(path.read_text())
    assert set(settings) <= CONTRACT_KEYS
    assert settings["input_queue_url"] == cloud.provisioned.input_queue_url
    assert settings["output_queue_url"] == cloud.provisioned.output_queue_url
    assert settings["input_dlq_url"] == cloud.provisioned.input_dlq_url
    assert settings["function_name"] == "face-recognition"
    assert settings["results_dir"] == str(tmp_path / "results")
    assert settings["concurrency"] == 3 and settings["function_timeout_s"] == 20
    # the endpoints themselves: the file alone says where the local cloud is
    assert settings["endpoint_url"] == cloud.moto_url
    assert settings["lambda_endpoint_url"] == cloud.lambda_url


def test_run_local_up_prints_exports_and_stops_on_sigterm(inputs: tuple[Path, Path],
                                                          tmp_path: Path) -> None:
    gallery, students = inputs
    out = io.StringIO()
    config = tmp_path / "daemon.toml"
    outcome: dict[str, Any] = {}

    def up() -> None:
        outcome["rc"] = run_local_up(config, gallery, students, results_dir=tmp_path / "results",
                                     handler="tests.lambda_service.handlers:noop",
                                     camera_handler="tests.lambda_service.handlers:noop",
                                     resources=ResourceSpec(prefix="up", url_auth_type="NONE"),
                                     work_dir=tmp_path / "work", out=out)

    def web_tier_answers() -> None:
        """Once `local up` prints the web tier's line: its /healthz, then the real SIGTERM."""
        deadline = time.monotonic() + 90
        while "web tier: http" not in out.getvalue() and time.monotonic() < deadline:
            time.sleep(0.05)
        url = next((line.split()[-1] for line in out.getvalue().splitlines()
                    if line.startswith("web tier: http")), None)
        if url is not None:
            with urllib.request.urlopen(url + "healthz", timeout=10) as response:
                outcome["web"] = (response.status, json.loads(response.read()))
        os.kill(os.getpid(), signal.SIGTERM)

    # signal handlers can only be installed from the main thread: run_local_up runs here, and a
    # watchdog thread sends the real SIGTERM once the web tier answers
    watchdog = threading.Thread(target=web_tier_answers, daemon=True)
    watchdog.start()
    up()
    watchdog.join(5)
    assert outcome["rc"] == 0
    text = out.getvalue()
    # the web tier: started on the cloud, its address printed, answering
    assert outcome["web"] == (200, {"status": "ok", "held": 0})
    assert "export AWS_ENDPOINT_URL=http://127.0.0.1:" in text
    assert "export AWS_ENDPOINT_URL_LAMBDA=http://127.0.0.1:" in text
    assert f"# daemon config: {config}" in text
    assert tomllib.loads(config.read_text())["function_name"] == "face-recognition"
    # the camera path: both URLs and the response queue, and how to send to them
    lines = {line.split(":", 1)[0].strip("# ").strip(): line for line in text.splitlines()}
    assert "auth NONE" in lines["camera path (Function URLs, auth NONE"]
    frame = lines["one stage  (frame_handler, the answer over HTTP)"].split()[-1]
    detect = lines["two stages (detect_handler, the answer on the queue)"].split()[-1]
    queue = lines["response queue"].split()[-1]
    assert frame.startswith("http://127.0.0.1:") and detect.startswith("http://127.0.0.1:")
    assert frame != detect and queue.endswith("/up-response")
    assert f"python -m camera send --url {detect} --response-queue {queue}" in text


def _sigterm_when_ready(config: Path) -> None:
    deadline = time.monotonic() + 60
    while not config.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)
    os.kill(os.getpid(), signal.SIGTERM)


def _run_local_up_until_sigterm(inputs: tuple[Path, Path], tmp_path: Path,
                                **kwargs: Any) -> tuple[int, str]:
    gallery, students = inputs
    out = io.StringIO()
    config = tmp_path / "daemon.toml"
    watchdog = threading.Thread(target=_sigterm_when_ready, args=(config,), daemon=True)
    watchdog.start()
    code = run_local_up(config, gallery, students, results_dir=tmp_path / "results",
                        handler="tests.lambda_service.handlers:noop", camera=False,
                        resources=ResourceSpec(prefix="up"), out=out, **kwargs)
    watchdog.join(5)
    return code, out.getvalue()


def test_local_up_removes_its_scratch_folder_on_a_clean_exit_unless_kept(
        inputs: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import tempfile

    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))  # where mkdtemp puts the folder
    # GIVEN a local up stopped cleanly THEN no /tmp/localcloud-* folder is left behind
    code, text = _run_local_up_until_sigterm(inputs, tmp_path)
    assert code == 0 and "removed when it stops" in text
    assert list(scratch.iterdir()) == []
    # AND --keep-work-dir keeps it, with its logs
    code, text = _run_local_up_until_sigterm(inputs, tmp_path, keep_work_dir=True)
    (kept,) = scratch.iterdir()
    assert code == 0 and kept.name.startswith("localcloud-") and (kept / "moto.log").exists()
    assert f"logs in {kept}, kept when it stops" in text


def test_local_up_keeps_its_scratch_folder_when_it_fails_and_says_where(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    import tempfile

    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    students = tmp_path / "students.json"
    students.write_text("[]")
    code = run_local_up(tmp_path / "d.toml", tmp_path / "missing-gallery", students,
                        out=io.StringIO())
    (kept,) = scratch.iterdir()
    assert code == 1 and f"logs kept in {kept}" in capsys.readouterr().err


def test_run_local_up_in_serverless_mode_says_where_uploads_and_results_go(
        inputs: tuple[Path, Path], tmp_path: Path) -> None:
    gallery, students = inputs
    out = io.StringIO()
    config = tmp_path / "daemon.toml"
    watchdog = threading.Thread(target=_sigterm_when_ready, args=(config,), daemon=True)
    watchdog.start()
    code = run_local_up(config, gallery, students, results_dir=tmp_path / "results",
                        handler="tests.lambda_service.handlers:noop", camera=False,
                        resources=ResourceSpec(prefix="sl", mode="serverless"), out=out)
    watchdog.join(5)
    assert code == 0
    assert ("# serverless mode: an upload to sl-input invokes face-recognition (no daemon "
            "needed); CSVs in sl-output, events that failed every attempt on http://127.0.0.1:"
            in out.getvalue())
    assert "/sl-failed" in out.getvalue()
