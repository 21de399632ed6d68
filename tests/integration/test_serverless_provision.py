"""`aws provision --mode serverless|daemon` against a real moto server over HTTP (as if it were
AWS): the input bucket notifies the function or the input queue, never both, with the least
privileged S3 permission and the function's asynchronous settings; each switch is one change and
a second run of either mode reports none."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import boto3
import pytest
from test_aws_provision_cli import IMAGE, provision_cli

pytestmark = pytest.mark.integration

FUNCTION_ARN = "arn:aws:lambda:us-east-1:123456789012:function:face-recognition"


def _args(config: Path, *extra: str) -> tuple[str, ...]:
    return ("--config-out", str(config), "--prefix", "class", "--image-uri", IMAGE,
            "--gallery-in-image", "/opt/gallery/encoding", *extra)


def _triggers(s3: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    config = s3.get_bucket_notification_configuration(Bucket="class-input")
    return (config.get("QueueConfigurations", []),
            config.get("LambdaFunctionConfigurations", []))


def _s3_statements(lam: Any) -> list[dict[str, Any]]:
    try:
        policy = json.loads(lam.get_policy(FunctionName="face-recognition")["Policy"])
    except lam.exceptions.ResourceNotFoundException:
        return []
    return [s for s in policy["Statement"]
            if s.get("Principal") in ({"Service": "s3.amazonaws.com"}, "s3.amazonaws.com")]


def _run(*args: str) -> list[str]:
    result = provision_cli(*args)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout.strip().splitlines()


def test_switching_modes_leaves_exactly_one_trigger_each_time(aws_env: str,
                                                              tmp_path: Path) -> None:
    session = boto3.session.Session(region_name="us-east-1")
    s3, lam = session.client("s3"), session.client("lambda")
    config = tmp_path / "handler.toml"
    daemon = _args(config)
    serverless = _args(config, "--mode", "serverless", "--trigger-suffix", ".mp4",
                       "--max-retry-attempts", "1", "--max-event-age", "3600")
    # GIVEN a daemon-mode deployment
    _run(*daemon)
    queues, functions = _triggers(s3)
    assert [q["QueueArn"].split(":")[-1] for q in queues] == ["class-input"] and functions == []
    assert _s3_statements(lam) == []

    for _ in range(2):  # back and forth, twice
        # WHEN it is switched to serverless mode
        lines = _run(*serverless)
        assert any("s3 notification class-input" in line and "replacing the queue trigger"
                   in line for line in lines), lines
        # THEN the bucket invokes the function for .mp4 keys, and no longer the queue
        queues, functions = _triggers(s3)
        assert queues == []
        [function] = functions
        assert function["LambdaFunctionArn"] == FUNCTION_ARN
        assert function["Events"] == ["s3:ObjectCreated:*"]
        assert [(r["Name"].lower(), r["Value"]) for r in
                function["Filter"]["Key"]["FilterRules"]] == [("suffix", ".mp4")]
        # AND only S3, for this bucket in this account, may invoke it
        [statement] = _s3_statements(lam)
        assert statement["Action"] == "lambda:InvokeFunction"
        assert statement["Condition"]["ArnLike"]["AWS:SourceArn"] == "arn:aws:s3:::class-input"
        assert statement["Condition"]["StringEquals"]["AWS:SourceAccount"] == "123456789012"
        # AND a failed event goes to the failure queue after one retry, at most an hour old
        invoke_config = lam.get_function_event_invoke_config(FunctionName="face-recognition")
        assert invoke_config["MaximumRetryAttempts"] == 1
        assert invoke_config["MaximumEventAgeInSeconds"] == 3600
        assert invoke_config["DestinationConfig"]["OnFailure"]["Destination"] == (
            "arn:aws:sqs:us-east-1:123456789012:class-failed")
        assert _run(*serverless)[-1] == "unchanged"

        # WHEN it is switched back to daemon mode
        lines = _run(*daemon)
        assert any("replacing the function trigger" in line for line in lines), lines
        queues, functions = _triggers(s3)
        assert [q["QueueArn"].split(":")[-1] for q in queues] == ["class-input"]
        assert functions == []
        assert _s3_statements(lam) == []
        assert _run(*daemon)[-1] == "unchanged"


def test_a_changed_async_setting_is_one_update_then_unchanged(aws_env: str,
                                                               tmp_path: Path) -> None:
    lam = boto3.session.Session(region_name="us-east-1").client("lambda")
    config = tmp_path / "handler.toml"
    _run(*_args(config, "--mode", "serverless"))
    lines = _run(*_args(config, "--mode", "serverless", "--max-retry-attempts", "0"))
    assert any("updated lambda event invoke config face-recognition" in line
               for line in lines), lines
    assert lam.get_function_event_invoke_config(
        FunctionName="face-recognition")["MaximumRetryAttempts"] == 0
    assert _run(*_args(config, "--mode", "serverless", "--max-retry-attempts", "0"))[-1] == (
        "unchanged")


def test_a_foreign_trigger_to_the_function_is_refused_in_daemon_mode(aws_env: str,
                                                                     tmp_path: Path) -> None:
    session = boto3.session.Session(region_name="us-east-1")
    s3 = session.client("s3")
    config = tmp_path / "handler.toml"
    _run(*_args(config))
    # GIVEN someone made the bucket invoke the function by hand, beside the queue
    current = s3.get_bucket_notification_configuration(Bucket="class-input")
    by_hand = {"QueueConfigurations": current["QueueConfigurations"],
               "LambdaFunctionConfigurations": [{"Id": "by-hand", "LambdaFunctionArn":
                                                 FUNCTION_ARN,
                                                 "Events": ["s3:ObjectCreated:Put"]}]}
    s3.put_bucket_notification_configuration(Bucket="class-input",
                                             NotificationConfiguration=by_hand)
    # WHEN daemon mode is provisioned again
    result = provision_cli(*_args(config))
    # THEN it refuses, saying why, and leaves the bucket as it was
    assert result.returncode == 78, result.stdout + result.stderr
    assert "by-hand" in result.stderr and "twice" in result.stderr
    queues, functions = _triggers(s3)
    assert [f["Id"] for f in functions] == ["by-hand"] and len(queues) == 1


def test_serverless_mode_needs_the_function(aws_env: str, tmp_path: Path) -> None:
    result = provision_cli("--config-out", str(tmp_path / "h.toml"), "--prefix", "nofn",
                           "--mode", "serverless")
    assert result.returncode == 78, result.stdout + result.stderr
    assert "needs the function face-recognition" in result.stderr
    s3 = boto3.session.Session(region_name="us-east-1").client("s3")
    assert "LambdaFunctionConfigurations" not in s3.get_bucket_notification_configuration(
        Bucket="nofn-input")
