"""The scratch folder of one `local up` or `local demo` run (its logs, the daemon's config and
state): removed when the run ends cleanly, unless asked to keep it; kept, and named, when the
run fails, so that its logs can be read."""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path
from typing import IO


class WorkDir:
    """A folder under the system's temp dir (or the one given, which is never removed)."""

    def __init__(self, prefix: str, *, given: Path | None = None, keep: bool = False) -> None:
        self.owned = given is None
        self.keep = keep
        self.path = given if given is not None else Path(tempfile.mkdtemp(prefix=prefix))

    def finish(self, ok: bool, *, out: IO[str] | None = None, announce: bool = True) -> bool:
        """End of the run: remove the folder after a clean one (unless kept); after a failure
        keep it and say where (unless the caller says it). Returns whether it is still there."""
        if ok and self.owned and not self.keep:
            shutil.rmtree(self.path, ignore_errors=True)
            return False
        if not ok and announce:
            print(f"logs kept in {self.path}", file=out or sys.stderr)
        return True
