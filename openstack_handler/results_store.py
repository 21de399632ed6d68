"""Result files on local disk: safe paths under the results dir, atomic and idempotent writes.

``<results_dir>/<input key without its extension>.csv`` (or ``.error``). Key folders are kept;
empty and ``.`` components are dropped, ``..`` becomes ``__``, control characters become ``_``,
a component that looks like the store's temp files (``.tmp-…``) gets a ``_`` in front,
and a component too long for the filesystem is shortened with a hash suffix, so no key can
address anything outside the results dir. Spaces and unicode are kept as they are.

Several daemon processes (replicas, e.g. ``handler@1`` and ``handler@2``) may share one results
dir. Each names its temp files ``.tmp-<replica>.…`` (``.tmp-_.…`` for an unnamed daemon), so the
startup sweep removes its own leftovers at once and never a live write of another replica;
anyone else's temp file is removed only once it is older than :data:`STALE_TEMP_AGE_S`.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import structlog

from openstack_handler.errors import InvalidKey

log = structlog.get_logger(__name__)

CSV_SUFFIX = ".csv"
ERROR_SUFFIX = ".error"
NAME_MAX = 255  # bytes per path component on Linux filesystems
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_TMP_PREFIX = ".tmp-"
#: a temp file of another replica this old is abandoned (a write holds one for milliseconds).
STALE_TEMP_AGE_S = 3600.0


def _fit_component(name: str, reserve: int = 0) -> str:
    limit = NAME_MAX - reserve
    if len(name.encode("utf-8")) <= limit:
        return name
    digest = "~" + hashlib.sha256(name.encode("utf-8")).hexdigest()[:16]
    budget = limit - len(digest)
    cut = name.encode("utf-8")[:budget].decode("utf-8", errors="ignore")
    return cut + digest


def safe_relative_path(key: str) -> PurePosixPath:
    """The key's path relative to the results dir, without its extension (e.g. ``dir/my clip``).

    Raises :class:`InvalidKey` when nothing usable remains (``""``, ``"/"``, ``"./."``).
    """
    parts: list[str] = []
    for part in key.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            part = "__"
        elif part.startswith(_TMP_PREFIX):  # the store's own temp names are swept at startup
            part = "_" + part
        parts.append(_CONTROL.sub("_", part))
    if not parts:
        raise InvalidKey(f"object key {key!r} has no usable path component")
    last = PurePosixPath(parts[-1])
    stem = last.stem if last.suffix else last.name
    parts[-1] = stem or "_"
    # Leave room in the last component for the longest suffix we append.
    reserve = max(len(CSV_SUFFIX), len(ERROR_SUFFIX))
    parts = [_fit_component(p) for p in parts[:-1]] + [_fit_component(parts[-1], reserve)]
    return PurePosixPath(*parts)


@dataclass(frozen=True)
class WriteOutcome:
    """What a write did: the final path, and whether the bytes on disk changed."""

    path: Path
    changed: bool


class ResultsStore:
    """Writes ``.csv`` / ``.error`` result files under *root*, atomically and idempotently."""

    def __init__(self, root: str | os.PathLike[str], *, replica: str = "",
                 clock: Callable[[], float] = time.time) -> None:
        self.root = Path(root)
        #: this process's temp-file names start with it (see the module docstring).
        self.temp_prefix = f"{_TMP_PREFIX}{replica or '_'}."
        self._clock = clock
        #: Result files get the mode a plain open() would give: 0666 less the umask (systemd's
        #: UMask=0027 makes them group-readable for operators, never world-readable).
        self.file_mode = 0o666 & ~_process_umask()
        self._resolved_root: Path | None = None

    def path_for(self, key: str, suffix: str) -> Path:
        rel = safe_relative_path(key)
        return self.root / rel.parent / (rel.name + suffix)

    def write_csv(self, key: str, text: str) -> WriteOutcome:
        """Write the CSV result for *key*; a stale ``.error`` for the same video is removed."""
        outcome = self._write(self.path_for(key, CSV_SUFFIX), text.encode("utf-8"))
        self._remove(self.path_for(key, ERROR_SUFFIX))
        return outcome

    def write_error(self, key: str, reason: str) -> WriteOutcome:
        """Write the error reason for *key*; a stale ``.csv`` for the same video is removed."""
        text = reason if reason.endswith("\n") else reason + "\n"
        outcome = self._write(self.path_for(key, ERROR_SUFFIX), text.encode("utf-8"))
        self._remove(self.path_for(key, CSV_SUFFIX))
        return outcome

    def remove_stale_temp_files(self) -> int:
        """Delete the temp files a killed process left behind (at startup, before any write:
        a temp file is never the result, the ``os.replace`` that publishes it never happened):
        this replica's own at once, others' once older than :data:`STALE_TEMP_AGE_S`, since
        another replica may be writing them now. Returns how many were removed."""
        removed = 0
        if not self.root.is_dir():
            return 0
        abandoned_before = self._clock() - STALE_TEMP_AGE_S
        for path in self.root.rglob(_TMP_PREFIX + "*"):
            try:
                if not path.is_file() or path.is_symlink():
                    continue
                if (path.name.startswith(self.temp_prefix)
                        or path.stat().st_mtime < abandoned_before):
                    path.unlink()
                    removed += 1
            except FileNotFoundError:  # another replica's write finished meanwhile
                continue
            except OSError as exc:
                log.warning("results.stale_temp_not_removed", path=str(path), error=str(exc))
        if removed:
            log.info("results.stale_temp_removed", count=removed, results_dir=str(self.root))
        return removed

    def probe(self) -> None:
        """Check that a result could be written now (create, fsync and remove a temp file);
        raise OSError if not."""
        self._make_dirs(self.root)
        fd, tmp = tempfile.mkstemp(prefix=self.temp_prefix + "probe-", dir=self.root)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(b"probe\n")
                fh.flush()
                os.fsync(fh.fileno())
        finally:
            os.unlink(tmp)

    # -- internals ---------------------------------------------------------------------------

    def _write(self, path: Path, data: bytes) -> WriteOutcome:
        self._make_dirs(path.parent)
        self._check_inside(path)
        try:
            if path.read_bytes() == data:
                return WriteOutcome(path, changed=False)
        except FileNotFoundError:
            pass
        fd, tmp = tempfile.mkstemp(prefix=self.temp_prefix, dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fchmod(fh.fileno(), self.file_mode)  # mkstemp's 0600 is too tight
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            raise
        _fsync_dir(path.parent)
        return WriteOutcome(path, changed=True)

    def _remove(self, path: Path) -> None:
        try:
            path.unlink()
        except FileNotFoundError:
            return
        _fsync_dir(path.parent)

    def _make_dirs(self, directory: Path) -> None:
        missing: list[Path] = []
        current = directory
        while not current.exists():
            missing.append(current)
            current = current.parent
        directory.mkdir(parents=True, exist_ok=True)
        for created in reversed(missing):  # make each new directory entry durable
            _fsync_dir(created.parent)

    def _check_inside(self, path: Path) -> None:
        # Defence in depth against symlinks planted inside the results dir. The root itself is
        # the operator's choice (it may be a symlink): resolved once, on the first write.
        if self._resolved_root is None:
            self._resolved_root = self.root.resolve()
        root = self._resolved_root
        if not path.parent.resolve().is_relative_to(root):
            raise InvalidKey(f"result path {path} resolves outside {root}")


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _process_umask() -> int:
    """The umask, read without changing it (``os.umask`` would race with other threads)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o022
