"""The aws_resources role through site.yml against a real moto server over HTTP (as if AWS)."""

from __future__ import annotations

import json
from pathlib import Path

import boto3
from ansible_helpers import PlayResult, run_playbook

from openstack_handler.daemon.settings import load_settings


def run_aws_play(extra_vars: Path) -> PlayResult:
    return run_playbook("localhost,", extra_vars, "--tags", "aws", timeout_s=300)


def test_the_aws_play_provisions_once_then_reports_no_change(
        aws_env: str, course_data: Path, tmp_path: Path) -> None:
    config = tmp_path / "aws-handler.toml"
    extra_vars = tmp_path / "vars.json"
    extra_vars.write_text(json.dumps({
        "aws_resources_prefix": "course",
        "aws_resources_students_file": str(course_data / "student_data.json"),
        "aws_resources_config_file": str(config),
        "aws_resources_image_uri": "123456789012.dkr.ecr.us-east-1.amazonaws.com/face:1",
        "aws_resources_environment": {"AWS_ENDPOINT_URL": aws_env}}))
    # WHEN the play runs the first time, the resources are created and the settings written
    first = run_aws_play(extra_vars)
    assert first.returncode == 0, first.output[-4000:]
    assert first.recap("localhost")["changed"] == 1
    settings = load_settings(config, env={})
    sqs = boto3.session.Session(region_name="us-east-1").client("sqs")
    assert settings.input_queue_url == sqs.get_queue_url(QueueName="course-input")["QueueUrl"]
    table = boto3.session.Session(region_name="us-east-1").resource("dynamodb").Table(
        "course-students")
    assert table.get_item(Key={"name": "mr_bean"})["Item"]["year"] == "freshmen"
    # the camera path's Lambda side came from the same definition (on moto, which stores it)
    lam = boto3.session.Session(region_name="us-east-1").client("lambda")
    assert lam.get_function_url_config(FunctionName="camera-detect")["AuthType"] == "AWS_IAM"
    (mapping,) = lam.list_event_source_mappings(FunctionName="camera-recognize")[
        "EventSourceMappings"]
    assert mapping["EventSourceArn"].endswith(":course-request")
    # WHEN it runs again, Ansible reports nothing changed
    second = run_aws_play(extra_vars)
    assert second.returncode == 0, second.output[-4000:]
    assert second.recap("localhost")["changed"] == 0, second.output[-4000:]
    # WHEN the mode becomes serverless, the bucket invokes the function instead of the queue
    variables = json.loads(extra_vars.read_text())
    extra_vars.write_text(json.dumps({**variables, "aws_resources_mode": "serverless",
                                      "aws_resources_trigger_suffix": ".mp4"}))
    third = run_aws_play(extra_vars)
    assert third.returncode == 0, third.output[-4000:]
    assert third.recap("localhost")["changed"] == 1
    s3 = boto3.session.Session(region_name="us-east-1").client("s3")
    notification = s3.get_bucket_notification_configuration(Bucket="course-input")
    assert notification.get("QueueConfigurations", []) == []
    assert [c["LambdaFunctionArn"].split(":")[-1] for c in
            notification["LambdaFunctionConfigurations"]] == ["face-recognition"]
    fourth = run_aws_play(extra_vars)
    assert fourth.returncode == 0, fourth.output[-4000:]
    assert fourth.recap("localhost")["changed"] == 0, fourth.output[-4000:]
