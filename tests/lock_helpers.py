"""Reading the requirements files `make lock` writes (uv pip compile --generate-hashes):
``name==version \\`` followed by its ``--hash=sha256:...`` lines, comments anywhere."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]
LOCK = REPO / "requirements" / "lock.txt"
#: the daemon's parts of the lock, which the handler role installs on a VM (the image's part,
#: lambda_image/requirements.txt, has a test of its own in tests/image)
DAEMON_SUBSETS = (REPO / "requirements" / "daemon.txt",
                  REPO / "requirements" / "daemon-openstack.txt")


@dataclass(frozen=True)
class Pin:
    """One locked package."""

    name: str  #: canonical (PEP 503)
    version: str
    hashes: frozenset[str]


def read_pins(path: Path) -> dict[str, Pin]:
    """Every pin in *path*, by canonical name; anything but ``name==version`` plus hashes fails."""
    logical: list[str] = []
    pending = ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    pins: dict[str, Pin] = {}
    for entry in logical:
        first, *options = entry.split()
        name, sep, version = first.partition("==")
        assert sep and version, f"{path.name}: {first!r} is not pinned with =="
        hashes = frozenset(o.removeprefix("--hash=") for o in options if o.startswith("--hash="))
        assert len(hashes) == len(options), f"{path.name}: unexpected options in {entry!r}"
        pins[canonicalize_name(name)] = Pin(canonicalize_name(name), version, hashes)
    return pins


def assert_subset_of_lock(subset: Path) -> dict[str, Pin]:
    """Every pin of *subset* is the lock's version, with hashes among the lock's; returns them."""
    lock = read_pins(LOCK)
    pins = read_pins(subset)
    assert pins, subset
    for name, pin in pins.items():
        assert name in lock, f"{subset.name}: {name} is not in the lock: run `make lock`"
        assert pin.version == lock[name].version, (
            f"{subset.name}: {name}=={pin.version}, the lock has {lock[name].version}: "
            "run `make lock`")
        assert pin.hashes and pin.hashes <= lock[name].hashes, f"{subset.name}: {name} hashes"
    return pins
