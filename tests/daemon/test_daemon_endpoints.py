"""Endpoints: every client on the settings' endpoint; local queues with AWS endpoints refused."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from lambda_service.net import free_port
from openstack_handler.cli import main
from openstack_handler.daemon.aws_clients import is_aws, is_local, lambda_client, sqs_client
from openstack_handler.daemon.errors import ConfigError
from openstack_handler.daemon.exit_codes import ExitCode
from openstack_handler.daemon.settings import load_settings

REPO = Path(__file__).resolve().parents[2]
LOCAL = """
input_queue_url = "http://127.0.0.1:40247/123456789012/local-input"
output_queue_url = "http://127.0.0.1:40247/123456789012/local-output"
function_name = "face-recognition"
"""
AWS = """
input_queue_url = "https://sqs.us-east-1.amazonaws.com/123456789012/in"
output_queue_url = "https://sqs.us-east-1.amazonaws.com/123456789012/out"
function_name = "face-recognition"
"""


@pytest.fixture()
def no_aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A process environment without AWS variables and with an empty HOME (no ~/.aws)."""
    import os

    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    return home


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "handler.toml"
    path.write_text(text)
    return path


def test_local_and_aws_hosts_are_told_apart() -> None:
    assert is_local("http://127.0.0.1:5000/1/q") and is_local("http://localhost:1")
    assert is_local("http://[::1]:5000") and not is_local("http://10.0.0.1:5000")
    assert is_aws("https://sqs.us-east-1.amazonaws.com") and not is_aws("http://127.0.0.1:1")


def test_the_settings_endpoints_win_over_boto3s_variables(tmp_path: Path, no_aws_env: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    # GIVEN a shell that still exports an earlier local cloud's endpoints
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:59999")
    monkeypatch.setenv("AWS_ENDPOINT_URL_LAMBDA", "http://127.0.0.1:59998")
    config = write(tmp_path, LOCAL + 'endpoint_url = "http://127.0.0.1:40247"\n'
                                     'lambda_endpoint_url = "http://127.0.0.1:40248"\n')
    settings = load_settings(config, env={"AWS_ENDPOINT_URL": "http://127.0.0.1:59999"})
    # WHEN the daemon's clients are built THEN they call the file's endpoints, and say so
    sqs, sqs_endpoint = sqs_client(settings)
    lam, lambda_endpoint = lambda_client(settings)
    assert sqs.meta.endpoint_url == "http://127.0.0.1:40247"
    assert lam.meta.endpoint_url == "http://127.0.0.1:40248"
    assert str(sqs_endpoint) == f"http://127.0.0.1:40247 (endpoint_url from {config})"
    assert lambda_endpoint.source == f"lambda_endpoint_url from {config}"


def test_an_environment_setting_overrides_the_files_endpoint(tmp_path: Path,
                                                             no_aws_env: Path) -> None:
    config = write(tmp_path, LOCAL + 'endpoint_url = "http://127.0.0.1:40247"\n')
    settings = load_settings(config, env={
        "OPENSTACK_HANDLER_SQS_ENDPOINT_URL": "http://127.0.0.1:40300"})
    sqs, endpoint = sqs_client(settings)
    assert sqs.meta.endpoint_url == "http://127.0.0.1:40300"
    assert endpoint.source == "sqs_endpoint_url from OPENSTACK_HANDLER_SQS_ENDPOINT_URL"


def test_boto3s_variable_is_named_when_the_settings_have_no_endpoint(
        tmp_path: Path, no_aws_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:40247")
    settings = load_settings(write(tmp_path, LOCAL), env={"AWS_ENDPOINT_URL":
                                                          "http://127.0.0.1:40247"})
    _, endpoint = sqs_client(settings)
    assert str(endpoint) == "http://127.0.0.1:40247 (AWS_ENDPOINT_URL in the environment)"


def test_a_local_config_without_endpoints_is_refused_not_sent_to_aws(tmp_path: Path,
                                                                     no_aws_env: Path) -> None:
    # GIVEN the queue URLs of a local cloud, and nothing that says where that cloud is
    config = write(tmp_path, LOCAL)
    settings = load_settings(config, env={})
    # WHEN a client is built THEN it is a configuration error naming the values and their sources
    with pytest.raises(ConfigError) as info:
        sqs_client(settings)
    message = str(info.value)
    assert f"input_queue_url = 'http://127.0.0.1:40247/123456789012/local-input' (from {config})" \
        in message
    assert "https://sqs.us-east-1.amazonaws.com (AWS itself: no sqs_endpoint_url or " \
           f"endpoint_url in {config}" in message
    assert 'set endpoint_url = "http://127.0.0.1:40247"' in message
    with pytest.raises(ConfigError, match="Lambda would be called at https://lambda.us-east-1"):
        lambda_client(settings)


def test_aws_queues_sent_to_a_local_endpoint_are_refused(tmp_path: Path, no_aws_env: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:40247")  # a local cloud's export
    settings = load_settings(write(tmp_path, AWS), env={"AWS_ENDPOINT_URL":
                                                        "http://127.0.0.1:40247"})
    with pytest.raises(ConfigError, match="at AWS, but SQS would be called at "
                                          r"http://127.0.0.1:40247 \(AWS_ENDPOINT_URL"):
        sqs_client(settings)
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    _, endpoint = sqs_client(load_settings(write(tmp_path, AWS), env={}))
    assert endpoint.url == "https://sqs.us-east-1.amazonaws.com"  # AWS's own config is fine


def test_check_config_refuses_a_local_config_without_endpoints(
        tmp_path: Path, no_aws_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write(tmp_path, LOCAL)
    assert main(["check-config", "--config", str(config)]) == ExitCode.CONFIG_ERROR
    err = capsys.readouterr().err
    assert "refusing to send a local config's requests to AWS" in err and str(config) in err
    assert main(["status", "--config", str(config)]) == ExitCode.CONFIG_ERROR


def test_a_dead_endpoint_is_reported_with_the_url_tried_and_where_it_came_from(
        tmp_path: Path) -> None:
    # GIVEN a config naming an endpoint where nothing listens, and other exports in the shell
    dead, exported = free_port(), free_port()
    config = write(tmp_path, LOCAL.replace("40247", str(dead))
                   + f'endpoint_url = "http://127.0.0.1:{dead}"\n'
                   + f'lambda_endpoint_url = "http://127.0.0.1:{dead}"\n'
                   + f'state_dir = "{tmp_path / "state"}"\nmetadata_url = ""\n')
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "PYTHONPATH": str(REPO),
           "AWS_ENDPOINT_URL": f"http://127.0.0.1:{exported}", "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing"}
    # WHEN the daemon starts
    proc = subprocess.run([sys.executable, "-m", "openstack_handler", "run", "--config",
                           str(config), "--log-format", "json"], env=env, capture_output=True,
                          text=True, timeout=120, check=False)
    # THEN it exits 69 naming the file's endpoint and the file, not the exported port
    assert proc.returncode == ExitCode.UNAVAILABLE, proc.stdout + proc.stderr
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    error = next(line for line in lines if line["event"] == "startup.queue_unreachable")["error"]
    assert error.startswith(f"cannot reach SQS at http://127.0.0.1:{dead} "
                            f"(endpoint_url from {config}): EndpointConnectionError")
    assert str(exported) not in error
    ignored = next(line for line in lines if line["event"] == "endpoint.environment_ignored")
    assert ignored["ignored"] == [f"AWS_ENDPOINT_URL=http://127.0.0.1:{exported}"]
