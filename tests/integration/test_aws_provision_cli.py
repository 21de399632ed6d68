"""`openstack-handler aws provision` against a real moto server over HTTP (as if it were AWS)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import boto3
import pytest
from integration_helpers import REPO

from openstack_handler.daemon.settings import load_settings

pytestmark = pytest.mark.integration

IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/face-recognition:v1"


def provision_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "openstack_handler", "aws", "provision", *args],
        check=False, capture_output=True, text=True, timeout=120, cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)})


def test_aws_provision_writes_a_loadable_config_and_a_second_run_is_unchanged(
        aws_env: str, course_data: Path, tmp_path: Path) -> None:
    config = tmp_path / "handler.toml"
    config.write_text('concurrency = 8\nresults_dir = "/srv/results"\n')  # operator's own keys
    args = ("--config-out", str(config), "--prefix", "class", "--students",
            str(course_data / "student_data.json"), "--image-uri", IMAGE,
            "--gallery-in-image", "/opt/gallery/encoding", "--function-timeout", "45")
    # WHEN it runs the first time, everything is created
    first = provision_cli(*args)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "created sqs queue class-input" in first.stdout
    assert "created lambda function face-recognition" in first.stdout
    settings = load_settings(config, env={})
    session = boto3.session.Session(region_name="us-east-1")
    assert settings.input_queue_url == session.client("sqs").get_queue_url(
        QueueName="class-input")["QueueUrl"]
    assert settings.function_timeout_s == 45 and settings.input_dlq_url
    assert settings.concurrency == 8 and str(settings.results_dir) == "/srv/results"
    item = session.client("dynamodb").get_item(
        TableName="class-students", Key={"name": {"S": "floki"}})["Item"]
    assert item["major"]["S"] == "history"
    # WHEN it runs again, nothing changes and the config is left as it was
    before = config.read_text()
    second = provision_cli(*args)
    assert second.returncode == 0, second.stdout + second.stderr
    assert second.stdout.strip().splitlines()[-1] == "unchanged"
    assert config.read_text() == before
    # WHEN a tool asks for JSON, it gets the same verdict and the settings it can deploy
    third = provision_cli(*args, "--json")
    assert third.returncode == 0, third.stdout + third.stderr
    report = json.loads(third.stdout)
    assert report["changed"] is False and report["changes"] == []
    assert report["settings"]["input_queue_url"] == settings.input_queue_url
    # AND the camera path is there: its URLs (AWS_IAM unless asked), its queues and trigger
    camera = report["camera"]
    lam = session.client("lambda")
    assert camera["auth_type"] == "AWS_IAM"
    assert camera["frame_url"] == lam.get_function_url_config(
        FunctionName="camera-frame")["FunctionUrl"]
    assert camera["detect_url"] == lam.get_function_url_config(
        FunctionName="camera-detect")["FunctionUrl"]
    assert camera["response_queue_url"] == session.client("sqs").get_queue_url(
        QueueName="class-response")["QueueUrl"]
    (mapping,) = lam.list_event_source_mappings(FunctionName="camera-recognize")[
        "EventSourceMappings"]
    assert mapping["EventSourceArn"].endswith(":class-request")
    assert "created function url camera-detect (AWS_IAM)" in first.stdout


def test_aws_provision_warns_that_a_none_url_is_public(aws_env: str, tmp_path: Path) -> None:
    result = provision_cli("--config-out", str(tmp_path / "h.toml"), "--prefix", "open",
                           "--image-uri", IMAGE, "--url-auth-type", "NONE")

    assert result.returncode == 0, result.stdout + result.stderr
    assert "makes the camera URLs public" in result.stderr
    assert "created lambda permission camera-frame/FunctionURLAllowPublicAccess" in result.stdout
    assert "(auth NONE)" in result.stdout


def test_aws_provision_without_an_image_says_a_none_url_type_makes_nothing_public(
        aws_env: str, tmp_path: Path) -> None:
    result = provision_cli("--config-out", str(tmp_path / "h.toml"), "--prefix", "shut",
                           "--url-auth-type", "NONE")

    assert result.returncode == 0, result.stdout + result.stderr
    assert "makes the camera URLs public" not in result.stderr
    assert "this run makes nothing public" in result.stderr
    assert "lambda permission" not in result.stdout
