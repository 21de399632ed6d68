"""Settings: TOML file → OPENSTACK_HANDLER_* environment → keyword overrides, validated."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from openstack_handler.daemon.errors import ConfigError
from openstack_handler.daemon.settings import MIB, Settings, load_settings

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


# -- messages a person can act on (issue 18, item 8) ---------------------------------------------

def test_an_unknown_key_suggests_the_one_meant(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL + "concurency = 3\n")
    with pytest.raises(ConfigError) as info:
        load_settings(path, env={})
    assert str(info.value) == f"{path}: unknown key 'concurency' (did you mean 'concurrency'?)"


def test_an_unterminated_string_says_so_with_its_line(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL + 'function_name = "recognise\nconcurrency = 3\n')
    with pytest.raises(ConfigError) as info:
        load_settings(path, env={})
    assert f"config file {path} is not valid TOML: line 5: unterminated string: " \
           "'function_name = \"recognise' opens a quote that does not close on the same line" \
        in str(info.value)
    path = write(tmp_path, MINIMAL + "region = us-east-1\n")
    with pytest.raises(ConfigError, match="line 5: invalid value in 'region = us-east-1': "
                                          "strings need quotes"):
        load_settings(path, env={})


def test_the_same_type_error_reads_the_same_from_the_file_and_the_environment(
        tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL + 'concurrency = "four"\n')
    with pytest.raises(ConfigError) as from_file:
        load_settings(path, env={})
    with pytest.raises(ConfigError) as from_env:
        load_settings(write(tmp_path, MINIMAL), env={"OPENSTACK_HANDLER_CONCURRENCY": "four"})
    assert str(from_file.value) == f'concurrency = "four" (in {path}): expected an integer'
    assert str(from_env.value) == ('concurrency = "four" (from OPENSTACK_HANDLER_CONCURRENCY): '
                                   "expected an integer")


def test_missing_required_settings_name_the_file_and_the_variables(tmp_path: Path) -> None:
    path = write(tmp_path, 'function_name = "f"\n')
    with pytest.raises(ConfigError) as info:
        load_settings(path, env={})
    assert str(info.value) == (
        f"missing required setting(s): input_queue_url, output_queue_url (not in {path}, and "
        "not set by OPENSTACK_HANDLER_INPUT_QUEUE_URL, OPENSTACK_HANDLER_OUTPUT_QUEUE_URL)")


def test_every_value_remembers_where_it_came_from(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL)
    s = load_settings(path, env={"OPENSTACK_HANDLER_CONCURRENCY": "8"}, region="eu-west-1")
    assert (s.origin("input_queue_url"), s.origin("concurrency"), s.origin("region"),
            s.origin("wait_time_s")) == (str(path), "OPENSTACK_HANDLER_CONCURRENCY",
                                         "an argument", "the default")
    assert s == load_settings(path, env={"OPENSTACK_HANDLER_CONCURRENCY": "8"},
                              region="eu-west-1")  # bookkeeping, not part of the value
