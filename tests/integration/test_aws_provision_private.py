"""`aws provision --private-endpoint-url`: the video function and the frame function beside it on a
real private function service (our Lambda service over HTTP, every call SigV4-verified) with the
calls used on AWS, and the daemon's targets that put it first; against moto as AWS."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from test_aws_provision_cli import provision_cli

from camera.frames import video_frames
from lambda_service.endpoint import LambdaEndpoint
from lambda_service.spec import EndpointSpec
from openstack_handler.daemon.settings import load_settings

pytestmark = pytest.mark.integration

CALLER_KEY, CALLER_SECRET = "AKIDPRIVATECALLER001", "private-caller-secret"


@pytest.fixture()
def private_service(tmp_path: Path) -> Iterator[LambdaEndpoint]:
    """A private function service that serves nothing yet and verifies every call's key."""
    from integration_helpers import REPO

    spec = EndpointSpec(functions=(), credentials={CALLER_KEY: CALLER_SECRET},
                        authenticate=True, default_concurrency=1,
                        state_dir=str(tmp_path / "private-state"))
    with LambdaEndpoint(spec, log_path=tmp_path / "private.log", pythonpath=[REPO],
                        cwd=REPO) as server:
        yield server


@pytest.fixture()
def profiles(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, aws_env: str) -> None:
    """The operator's credentials file: a key for the service, the function's own keys."""
    credentials = tmp_path / "credentials"
    credentials.write_text(f"[private-caller]\naws_access_key_id = {CALLER_KEY}\n"
                           f"aws_secret_access_key = {CALLER_SECRET}\n\n"
                           "[private-function]\naws_access_key_id = testing\n"
                           "aws_secret_access_key = testing\n")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(credentials))


def _caller(url: str) -> Any:
    return boto3.session.Session(profile_name="private-caller", region_name="us-east-1").client(
        "lambda", endpoint_url=url, config=Config(retries={"max_attempts": 0},
                                                  read_timeout=120))


def test_provision_makes_the_function_on_the_private_service_and_puts_it_first(
        profiles: None, private_service: LambdaEndpoint, image_models: Path, course_data: Path,
        course_records: dict[str, str], tmp_path: Path) -> None:
    config = tmp_path / "handler.toml"
    config.write_text("concurrency = 8\n")
    args = ("--config-out", str(config), "--prefix", "hybrid", "--students",
            str(course_data / "student_data.json"),
            "--private-endpoint-url", private_service.url, "--private-profile", "private-caller",
            "--private-function-profile", "private-function",
            "--private-gallery", str(course_data / "encoding"),
            "--private-model-dir", str(image_models), "--burst-after", "0")
    # WHEN the operator provisions with the private service named
    first = provision_cli(*args)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "created private function face-recognition (private) (Zip)" in first.stdout
    assert "created private function camera-frame (private) (Zip)" in first.stdout
    # THEN the daemon's settings put it first, AWS's Lambda past its slot, bursting at once
    settings = load_settings(config, env={})
    assert [(t.name, t.slots, t.endpoint_url, t.profile) for t in settings.targets] == [
        ("private", 1, private_service.url, "private-caller"), ("aws", 8, None, None)]
    assert settings.burst_after_s == 0
    # AND the function there recognises a course clip with its own keys and the VM's models
    lam = _caller(private_service.url)
    got = lam.get_function(FunctionName="face-recognition")
    assert got["Concurrency"] == {"ReservedConcurrentExecutions": 1}
    variables = got["Configuration"]["Environment"]["Variables"]
    assert (variables["INFERENCE_RUNTIME"], variables["MODEL_DIR"]) == ("onnx", str(image_models))
    s3 = boto3.client("s3")
    s3.upload_file(str(course_data / "videos" / "test_0.mp4"), "hybrid-input", "test_0.mp4")
    answer = lam.invoke(FunctionName="face-recognition", Payload=json.dumps({"Records": [{
        "eventName": "ObjectCreated:Put", "s3": {"bucket": {"name": "hybrid-input"},
                                                 "object": {"key": "test_0.mp4"}}}]}).encode())
    result = json.loads(answer["Payload"].read())["results"][0]
    assert result["status"] == "ok" and result["csv"].splitlines()[0] == \
        course_records["test_0.mp4"], result
    # AND the frame function beside it answers an image in the input bucket (the web tier's)
    frame = next(video_frames(course_data / "videos" / "test_0.mp4"))
    s3.put_object(Bucket="hybrid-input", Key="test_0.jpg", Body=frame.data)
    answer = lam.invoke(FunctionName="camera-frame", Payload=json.dumps({
        "requestContext": {"http": {"method": "GET"}},
        "queryStringParameters": {"bucket": "hybrid-input", "key": "test_0.jpg"}}).encode())
    body = json.loads(json.loads(answer["Payload"].read())["body"])
    assert body["result"] == course_records["test_0.mp4"].split(",")[0], body
    # WHEN it runs again, nothing changes; with more slots, only the reserved concurrency
    before = config.read_text()
    second = provision_cli(*args)
    assert second.returncode == 0, second.stdout + second.stderr
    assert second.stdout.strip().splitlines()[-1] == "unchanged"
    assert config.read_text() == before
    third = provision_cli(*args, "--private-slots", "2")
    assert third.returncode == 0, third.stdout + third.stderr
    assert third.stdout.strip().splitlines() == [
        "updated private function face-recognition (private) (reserved concurrency 2)",
        "updated private function camera-frame (private) (reserved concurrency 2)",
        f"updated config file {config}"]


def test_provision_refuses_a_private_service_without_the_functions_own_keys(
        profiles: None, private_service: LambdaEndpoint, course_data: Path,
        tmp_path: Path) -> None:
    proc = provision_cli("--config-out", str(tmp_path / "handler.toml"), "--prefix", "nokeys",
                         "--private-endpoint-url", private_service.url,
                         "--private-profile", "private-caller",
                         "--private-gallery", str(course_data / "encoding"))
    assert proc.returncode == 78, proc.stdout + proc.stderr
    assert "--private-function-profile" in proc.stderr
    assert _caller(private_service.url).list_functions()["Functions"] == []
