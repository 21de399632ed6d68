"""Reading the requirements files `make lock` writes (uv pip compile --generate-hashes):
``name==version \\`` followed by its ``--hash=sha256:...`` lines, comments anywhere."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]
LOCK = REPO / "requirements" / "lock.txt"
#: the parts of the lock that other installs use: the image's and the daemon's on a VM
SUBSETS = (REPO / "lambda_image" / "requirements.txt", REPO / "requirements" / "daemon.txt",
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
