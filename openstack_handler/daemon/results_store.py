"""Result files on local disk: safe paths under the results dir, atomic and idempotent writes.

``<results_dir>/<input key without its extension>.csv`` (or ``.error``). Key folders are kept;
empty and ``.`` components are dropped, ``..`` becomes ``__``, control characters become ``_``,
a component that looks like the store's temp files (``.tmp-…``) gets a ``_`` in front,
and a component too long for the filesystem is shortened with a hash suffix, so no key can
address anything outside the results dir. Spaces and unicode are kept as they are.

Nor can a symlink planted inside the results dir lead out of it: below the results dir every
step is taken relative to the directory already opened (``mkdir``/``open`` with ``dir_fd``, each
level opened ``O_NOFOLLOW``), so a symlinked folder is refused (:class:`InvalidKey`) before anything
is created through it, at any depth, and a symlink where the result file goes is replaced, never
written or read through. Walking by descriptor rather than checking paths first leaves no window
between a check and the ``mkdir`` for a folder to be swapped for a symlink. The results dir itself
is the operator's choice and may be a symlink.

Several daemon processes (replicas, e.g. ``handler@1`` and ``handler@2``) may share one results
dir. Each names its temp files ``.tmp-<replica>.…`` (``.tmp-_.…`` for an unnamed daemon), so the
startup sweep removes its own leftovers at once and never a live write of another replica;
anyone else's temp file is removed only once it is older than :data:`STALE_TEMP_AGE_S`.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import secrets
import stat
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import structlog

from openstack_handler.daemon.errors import InvalidKey

log = structlog.get_logger(__name__)

CSV_SUFFIX = ".csv"
ERROR_SUFFIX = ".error"
NAME_MAX = 255  # bytes per path component on Linux filesystems
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_TMP_PREFIX = ".tmp-"
#: a temp file of another replica this old is abandoned (a write holds one for milliseconds).
STALE_TEMP_AGE_S = 3600.0
#: how a folder below the results dir is opened: never through a symlink.
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_TEMP_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


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

    def path_for(self, key: str, suffix: str) -> Path:
        rel = safe_relative_path(key)
        return self.root / rel.parent / (rel.name + suffix)

    def write_csv(self, key: str, text: str) -> WriteOutcome:
        """Write the CSV result for *key*; a stale ``.error`` for the same video is removed."""
        return self._write_result(key, CSV_SUFFIX, text.encode("utf-8"), stale=ERROR_SUFFIX)

    def write_error(self, key: str, reason: str) -> WriteOutcome:
        """Write the error reason for *key*; a stale ``.csv`` for the same video is removed."""
        text = reason if reason.endswith("\n") else reason + "\n"
        return self._write_result(key, ERROR_SUFFIX, text.encode("utf-8"), stale=CSV_SUFFIX)

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
        self._make_root()
        fd, tmp = tempfile.mkstemp(prefix=self.temp_prefix + "probe-", dir=self.root)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(b"probe\n")
                fh.flush()
                os.fsync(fh.fileno())
        finally:
            os.unlink(tmp)

    # -- internals ---------------------------------------------------------------------------

    def _write_result(self, key: str, suffix: str, data: bytes, *, stale: str) -> WriteOutcome:
        rel = safe_relative_path(key)
        path = self.root / rel.parent / (rel.name + suffix)
        try:
            with self._directory(rel.parent.parts) as dir_fd:
                changed = _write_at(dir_fd, path.name, data, temp_prefix=self.temp_prefix,
                                    mode=self.file_mode)
                _remove_at(dir_fd, rel.name + stale)
        except OSError as exc:
            if exc.filename is None or os.path.isabs(exc.filename):
                raise
            # calls relative to a directory descriptor name only the last component: say
            # which result it was, for the log line and the state DB's last error
            raise OSError(exc.errno, exc.strerror, str(path)) from exc
        return WriteOutcome(path, changed=changed)

    @contextlib.contextmanager
    def _directory(self, parts: Sequence[str]) -> Iterator[int]:
        """A descriptor of ``root/parts…``, each missing level created (durably) on the way;
        raises :class:`InvalidKey` if a level is a symlink (nothing is created through it)."""
        self._make_root()
        fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            for depth, part in enumerate(parts):
                child = _open_subdir(fd, part, shown=self.root.joinpath(*parts[:depth + 1]))
                os.close(fd)
                fd = child
            yield fd
        finally:
            os.close(fd)

    def _make_root(self) -> None:
        """Create the results dir (the operator's path: symlinks in it are followed)."""
        missing: list[Path] = []
        current = self.root
        while not current.exists():
            missing.append(current)
            current = current.parent
        self.root.mkdir(parents=True, exist_ok=True)
        for created in reversed(missing):  # make each new directory entry durable
            _fsync_dir(created.parent)


def _open_subdir(parent_fd: int, name: str, *, shown: Path) -> int:
    """Open the folder *name* inside *parent_fd*, creating it when missing, without following
    a symlink (``mkdir`` does not follow one either: it finds the name taken)."""
    try:
        os.mkdir(name, dir_fd=parent_fd)
    except FileExistsError:
        pass
    else:
        os.fsync(parent_fd)  # the new directory entry is durable
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
    except OSError as exc:
        if _is_symlink_at(parent_fd, name):
            raise InvalidKey(f"result folder {shown} is a symlink; results are never written "
                             f"through one") from exc
        raise


def _is_symlink_at(dir_fd: int, name: str) -> bool:
    try:
        return stat.S_ISLNK(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
    except FileNotFoundError:
        return False


def _write_at(dir_fd: int, name: str, data: bytes, *, temp_prefix: str, mode: int) -> bool:
    """Publish *data* as *name* in *dir_fd* atomically (temp file + fsync + rename + directory
    fsync); False when the file already holds exactly *data*."""
    if _read_at(dir_fd, name) == data:
        return False
    fd, tmp = _create_temp(dir_fd, temp_prefix)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fchmod(fh.fileno(), mode)  # the temp file's 0600 is too tight
            os.fsync(fh.fileno())
        os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp, dir_fd=dir_fd)
        raise
    os.fsync(dir_fd)
    return True


def _read_at(dir_fd: int, name: str) -> bytes | None:
    """The bytes of *name* in *dir_fd*; None when absent or a symlink (never read through)."""
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return None
        raise
    with os.fdopen(fd, "rb") as fh:
        return fh.read()


def _create_temp(dir_fd: int, prefix: str) -> tuple[int, str]:
    """A new temp file in *dir_fd* (0600, ``O_EXCL``): its descriptor and name."""
    for _ in range(100):
        name = prefix + secrets.token_hex(4)
        try:
            return os.open(name, _TEMP_FLAGS, 0o600, dir_fd=dir_fd), name
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no unused temp file name", prefix)


def _remove_at(dir_fd: int, name: str) -> None:
    try:
        os.unlink(name, dir_fd=dir_fd)
    except FileNotFoundError:
        return
    os.fsync(dir_fd)


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
