"""Settings: TOML file → OPENSTACK_HANDLER_* environment → keyword overrides, validated."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from openstack_handler.errors import ConfigError
from openstack_handler.settings import MIB, Settings, load_settings

MINIMAL = """
input_queue_url = "http://sqs/in"
output_queue_url = "http://sqs/out"
function_name = "recognise"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "handler.toml"
    path.write_text(text)
    return path


def test_defaults_from_a_minimal_file(tmp_path: Path) -> None:
    s = load_settings(write(tmp_path, MINIMAL), env={"STATE_DIRECTORY": "/var/lib/oh"})
    assert (s.region, s.concurrency, s.function_timeout_s, s.wait_time_s, s.grace_period_s) == (
        "us-east-1", 4, 60, 20, 30)
    assert s.max_object_bytes == 512 * MIB
    assert s.input_dlq_url is None and s.output_dlq_url is None
    assert s.results_dir == Path("results")  # the default: relative to the working directory
    assert s.state_dir == Path("/var/lib/oh")  # systemd's StateDirectory=
    assert s.invoke_read_timeout_s == 90
    assert s.receive_visibility_s == 15 and s.heartbeat_interval_s == 5.0  # a short claim


def test_relative_paths_in_the_file_are_relative_to_the_file(tmp_path: Path) -> None:
    s = load_settings(write(tmp_path, MINIMAL + 'results_dir = "out/res"\nstate_dir = "/abs"\n'),
                      env={})
    assert s.results_dir == tmp_path / "out" / "res"
    assert s.state_dir == Path("/abs")


def test_state_dir_falls_back_to_xdg(tmp_path: Path) -> None:
    s = load_settings(write(tmp_path, MINIMAL), env={"XDG_STATE_HOME": "/x"})
    assert s.state_dir == Path("/x/openstack-handler")


def test_settings_are_frozen(tmp_path: Path) -> None:
    s = load_settings(write(tmp_path, MINIMAL), env={})
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.concurrency = 8  # type: ignore[misc]


def test_environment_overrides_file_with_type_coercion(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL + 'concurrency = 2\ninput_dlq_url = "http://sqs/dlq"\n')
    env = {"OPENSTACK_HANDLER_CONCURRENCY": "16", "OPENSTACK_HANDLER_RESULTS_DIR": "/srv/res",
           "OPENSTACK_HANDLER_INPUT_DLQ_URL": "",  # empty unsets an optional key
           "OPENSTACK_HANDLER_INVOKE_BACKOFF_MAX_S": "7.5",
           "OPENSTACK_HANDLER_FUNCTION_NAME": "other"}
    s = load_settings(path, env=env)
    assert s.concurrency == 16
    assert s.results_dir == Path("/srv/res")
    assert s.input_dlq_url is None
    assert s.invoke_backoff_max_s == 7.5
    assert s.function_name == "other"


def test_keyword_overrides_win_over_environment(tmp_path: Path) -> None:
    s = load_settings(write(tmp_path, MINIMAL), env={"OPENSTACK_HANDLER_CONCURRENCY": "16"},
                      concurrency=3, results_dir="/r")
    assert s.concurrency == 3
    assert s.results_dir == Path("/r")


def test_a_replica_name_comes_from_systemds_instance_in_the_environment(tmp_path: Path) -> None:
    assert load_settings(write(tmp_path, MINIMAL), env={}).replica == ""
    env = {"OPENSTACK_HANDLER_REPLICA": "2"}
    assert load_settings(write(tmp_path, MINIMAL), env=env).replica == "2"


def test_everything_from_the_environment_without_a_file() -> None:
    env = {"OPENSTACK_HANDLER_INPUT_QUEUE_URL": "a", "OPENSTACK_HANDLER_OUTPUT_QUEUE_URL": "b",
           "OPENSTACK_HANDLER_FUNCTION_NAME": "f", "OPENSTACK_HANDLER_STATE_DIR": "/s"}
    s = load_settings(None, env=env)
    assert isinstance(s, Settings) and s.state_dir == Path("/s")


@pytest.mark.parametrize(("text", "env", "message"), [
    ("", {}, "missing required setting"),
    (MINIMAL + "concurrenc = 3\n", {}, "unknown key"),
    (MINIMAL + 'concurrency = "3"\n', {}, "expected an integer"),
    (MINIMAL + "concurrency = true\n", {}, "expected an integer"),
    (MINIMAL + "concurrency = 0\n", {}, "concurrency must be"),
    (MINIMAL + "wait_time_s = 21\n", {}, "wait_time_s must be"),
    (MINIMAL + "function_timeout_s = 901\n", {}, "function_timeout_s must be"),
    (MINIMAL + 'log_level = "loud"\n', {}, "log_level"),
    (MINIMAL + "this is not toml\n", {}, "not valid TOML"),
    (MINIMAL, {"OPENSTACK_HANDLER_CONCURRENCY": "four"}, "expected an integer"),
    (MINIMAL.replace("http://sqs/out", "http://sqs/in"), {}, "are the same"),
    (MINIMAL, {"OPENSTACK_HANDLER_REPLICA": "a_b"}, "replica must be"),
    (MINIMAL, {"OPENSTACK_HANDLER_REPLICA": "1.2"}, "replica must be"),
    (MINIMAL, {"OPENSTACK_HANDLER_REPLICA": "x" * 33}, "replica must be"),
])
def test_invalid_settings_raise_config_error(tmp_path: Path, text: str, env: dict[str, str],
                                              message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(write(tmp_path, text), env=env)


def test_missing_file_and_unknown_override_raise_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_settings(tmp_path / "nope.toml", env={})
    with pytest.raises(ConfigError, match="unknown setting"):
        load_settings(write(tmp_path, MINIMAL), env={}, nonsense=1)
