"""Every command and option of `openstack-handler` explains itself (issue 18, item 6)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from cli_helpers import commands, undocumented

from openstack_handler.cli import build_parser

REPO = Path(__file__).resolve().parents[2]


def test_every_command_and_option_has_help_and_states_its_default() -> None:
    problems = [p for path, parser in commands(build_parser(), "openstack-handler")
                for p in undocumented(path, parser)]
    assert problems == []


def test_status_says_that_one_of_config_and_cloud_is_required() -> None:
    status = dict(commands(build_parser(), "oh"))["oh status"]
    assert "(--config FILE | --cloud NAME)" in status.format_usage()
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args(["status", "--config", "a", "--cloud", "b"])
    assert info.value.code == 2


def test_aws_provision_writes_with_config_out_and_the_old_name_still_works_with_a_warning(
        ) -> None:
    args = build_parser().parse_args(["aws", "provision", "--config-out", "h.toml"])
    assert args.config_out == Path("h.toml")
    code = ("from openstack_handler.cli import build_parser as b;"
            "print(b().parse_args(['aws', 'provision', '--config', 'h.toml']).config_out)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                          text=True, timeout=60, check=True)
    assert proc.stdout.strip() == "h.toml"
    assert "--config is deprecated for aws provision (it writes the file): use --config-out" \
        in proc.stderr
