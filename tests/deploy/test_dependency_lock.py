"""The one lock (requirements/lock.txt, written by `make lock`): what the venv holds, what
setup.cfg asks for, and the subsets the image and the VMs install (issue 25)."""

from __future__ import annotations

import configparser
import importlib.metadata
import re
from pathlib import Path

import pytest
from lock_helpers import DAEMON_SUBSETS, LOCK, REPO, assert_subset_of_lock, read_pins
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

#: what the venv holds beyond the lock: the project itself (installed editable, from the checkout)
PROJECT = "openstack-handler"


def _requirements(lines: list[str]) -> list[Requirement]:
    """The requirements among *lines* (comments and blank lines left out)."""
    return [Requirement(line) for line in (raw.split("#", 1)[0].strip() for raw in lines) if line]


def _setup_cfg_requirements() -> list[Requirement]:
    config = configparser.ConfigParser()
    config.read(REPO / "setup.cfg")
    lines = config["options"]["install_requires"].splitlines()
    for extra in config["options.extras_require"].values():
        lines += extra.splitlines()
    return _requirements(lines)


def _input_requirements(path: Path) -> list[Requirement]:
    return _requirements(path.read_text().splitlines())


def test_every_locked_package_is_pinned_with_its_hashes() -> None:
    pins = read_pins(LOCK)
    assert len(pins) > 100  # transitive ones included
    for pin in pins.values():
        assert pin.hashes and all(re.fullmatch(r"sha256:[0-9a-f]{64}", h) for h in pin.hashes), \
            pin.name
    # the torch pair this machine keeps on disk, and facenet-pytorch with its pins overridden
    assert (pins["torch"].version, pins["torchvision"].version) == ("2.14.1", "0.29.1")
    assert pins["facenet-pytorch"].version == "2.6.0"
    assert {"pip", "setuptools", "wheel", "uv"} <= pins.keys(), "the installers are locked too"


def test_the_lock_satisfies_every_requirement_of_setup_cfg_and_the_venv_inputs() -> None:
    # (a requirement changed without `make lock` would leave the venv resolved from a stale lock)
    pins = read_pins(LOCK)
    wanted = _setup_cfg_requirements() + _input_requirements(REPO / "requirements" / "venv.in")
    overridden = {canonicalize_name(r.name) for r in
                  _input_requirements(REPO / "requirements" / "overrides.txt")}
    for requirement in wanted:
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{requirement} is not in the lock: run `make lock`"
        if name not in overridden:
            assert requirement.specifier.contains(pins[name].version, prereleases=True), (
                f"the lock's {name}=={pins[name].version} does not satisfy {requirement}: "
                "run `make lock`")


def test_the_venv_holds_exactly_the_lock() -> None:
    pins = read_pins(LOCK)
    installed = {canonicalize_name(d.metadata["Name"]): d.version
                 for d in importlib.metadata.distributions()}
    assert {name: installed.get(name) for name in pins} == \
        {name: pin.version for name, pin in pins.items()}, "the venv is not the lock: make venv"
    assert set(installed) - set(pins) == {PROJECT}, "installed beside the lock"


@pytest.mark.parametrize("subset", DAEMON_SUBSETS, ids=lambda p: str(p.relative_to(REPO)))
def test_each_daemon_subset_is_the_lock_s_own_pins_and_hashes(subset: Path) -> None:
    assert_subset_of_lock(subset)


def test_the_daemon_s_subsets_are_setup_cfg_s_install_requires_without_torch() -> None:
    core = read_pins(REPO / "requirements" / "daemon.txt")
    with_openstack = read_pins(REPO / "requirements" / "daemon-openstack.txt")
    assert {"boto3", "structlog", "tenacity", "python-daemon"} <= core.keys()
    assert "openstacksdk" not in core and "openstacksdk" in with_openstack
    assert core.keys() <= with_openstack.keys()
    assert not {"torch", "moto", "numpy", "onnxruntime"} & with_openstack.keys()
