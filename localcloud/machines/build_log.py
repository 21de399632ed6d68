"""What `make roots` and `make image` print while they build: a line per step, stamped with the
seconds since its phase began, and a failed step's log tail."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from localcloud.machines.nspawn import Progress


def stamped(say: Callable[[str], None], prefix: str, started: float) -> Progress:
    """A progress callback that prefixes each line with *prefix* and the seconds since *started*."""
    def progress(line: str) -> None:
        say(f"{prefix} [{time.monotonic() - started:5.0f} s] {line}")

    return progress


def tail(path: Path, lines: int = 30) -> str:
    """The last lines of a build log, for the error that names it."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
