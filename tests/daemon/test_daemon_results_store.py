"""Result files: safe paths for hostile keys, atomic writes that leave no temp files, idempotency."""

from __future__ import annotations

import os
import time
from pathlib import Path, PurePosixPath
from typing import Any

import pytest

from openstack_handler.daemon.errors import InvalidKey
from openstack_handler.daemon.results_store import ResultsStore, safe_relative_path


@pytest.mark.parametrize(("key", "expected"), [
    ("video.mp4", "video"),
    ("dir/my clip.mp4", "dir/my clip"),
    ("../../etc/passwd", "__/__/etc/passwd"),
    ("/abs/path.mp4", "abs/path"),
    ("a/./b.mp4", "a/b"),
    ("a//b.mp4", "a/b"),
    ("ünïcødé/видео 1.mp4", "ünïcødé/видео 1"),
    ("clip.tar.mp4", "clip.tar"),
    ("noext", "noext"),
    (".hidden", ".hidden"),
    ("dir/..", "dir/__"),
    ("ctl\x00\x1fchars.mp4", "ctl__chars"),
])
def test_safe_relative_path(key: str, expected: str) -> None:
    assert safe_relative_path(key) == PurePosixPath(expected)


@pytest.mark.parametrize("key", ["", "/", "./.", "//"])
def test_keys_without_a_usable_component_are_rejected(key: str) -> None:
    with pytest.raises(InvalidKey):
        safe_relative_path(key)


def test_long_components_are_shortened_with_a_hash(tmp_path: Path) -> None:
    long_a, long_b = "é" * 200 + "a.mp4", "é" * 200 + "b.mp4"
    rel_a, rel_b = safe_relative_path(long_a), safe_relative_path(long_b)
    assert rel_a != rel_b
    store = ResultsStore(tmp_path)
    path = store.write_csv("dir/" + long_a, "x,,\n").path
    assert len(path.name.encode()) <= 255 and path.read_text() == "x,,\n"


@pytest.mark.parametrize("key", ["../../etc/passwd", "/etc/passwd.mp4", "a/../../../x.mp4",
                                 "..", "../", "a/" * 50 + "deep.mp4"])
def test_nothing_escapes_the_results_dir(tmp_path: Path, key: str) -> None:
    root = tmp_path / "results"
    outcome = ResultsStore(root).write_csv(key, "president_trump,physics,junior\n")
    assert outcome.path.resolve().is_relative_to(root.resolve())
    assert outcome.path.read_text() == "president_trump,physics,junior\n"
    assert not (tmp_path / "etc").exists()


def _everything(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.mark.parametrize("key", ["link/x.mp4", "link/a/x.mp4", "link/a/b/x.mp4",
                                 "link/a/b/c/d/x.mp4", "inner/link/a/b/x.mp4"])
def test_symlink_inside_results_dir_cannot_lead_out_at_any_depth(tmp_path: Path,
                                                                  key: str) -> None:
    # GIVEN a symlink planted inside the results dir (at the top, or one folder down) pointing
    # at a directory outside it
    root = tmp_path / "results"
    (root / "inner").mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    link_dir = root / "inner" if key.startswith("inner/") else root
    os.symlink(outside, link_dir / "link")
    # WHEN a result is written for a key that goes through it, however deep
    with pytest.raises(InvalidKey, match="is a symlink"):
        ResultsStore(root).write_csv(key, "a,,\n")
    # THEN nothing at all was created outside: no file, and no folder of the key's either
    assert _everything(outside) == []
    assert _everything(root) == sorted({"inner", str((link_dir / "link").relative_to(root))})


@pytest.mark.parametrize("outside_text", ["precious\n", "a,,\n"],
                         ids=["other text", "the result's own text"])
def test_a_symlink_where_the_result_goes_is_replaced_not_written_through(
        tmp_path: Path, outside_text: str) -> None:
    # GIVEN the result file's name taken by a symlink to a file outside the results dir (even
    # one that happens to hold the result's text: it is not the result, and must not pass for it)
    root = tmp_path / "results"
    root.mkdir()
    target = tmp_path / "outside.txt"
    target.write_text(outside_text)
    os.symlink(target, root / "v.csv")
    # WHEN the result is written
    outcome = ResultsStore(root).write_csv("v.mp4", "a,,\n")
    # THEN the link itself is replaced by the result; the file it pointed at is untouched
    assert outcome.changed and not outcome.path.is_symlink()
    assert outcome.path.read_text() == "a,,\n" and target.read_text() == outside_text


def test_the_results_dir_itself_may_be_a_symlink(tmp_path: Path) -> None:
    # GIVEN an operator who points the results dir at another disk through a symlink
    real = tmp_path / "disk" / "results"
    real.mkdir(parents=True)
    os.symlink(real, tmp_path / "results")
    # WHEN results are written under it THEN they land on that disk
    ResultsStore(tmp_path / "results").write_csv("dir/v.mp4", "a,,\n")
    assert (real / "dir" / "v.csv").read_text() == "a,,\n"


def _all_files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_writes_are_atomic_and_idempotent(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path)
    first = store.write_csv("dir/my clip.mp4", "a,b,c\n")
    assert first.changed and first.path == tmp_path / "dir" / "my clip.csv"
    mtime = first.path.stat().st_mtime_ns
    inode = first.path.stat().st_ino
    # Same content again (a redelivered result): nothing is rewritten.
    again = store.write_csv("dir/my clip.mp4", "a,b,c\n")
    assert not again.changed
    assert (first.path.stat().st_mtime_ns, first.path.stat().st_ino) == (mtime, inode)
    # New content replaces the file through a rename (new inode), never in place.
    changed = store.write_csv("dir/my clip.mp4", "d,e,f\n")
    assert changed.changed and changed.path.read_text() == "d,e,f\n"
    assert changed.path.stat().st_ino != inode
    assert _all_files(tmp_path) == ["dir/my clip.csv"]  # no temp files left behind
    assert oct(changed.path.stat().st_mode & 0o777) == oct(0o644)


def test_result_files_get_the_mode_the_umask_allows(tmp_path: Path) -> None:
    old = os.umask(0o027)  # what the systemd unit sets: group-readable, never world-readable
    try:
        written = ResultsStore(tmp_path).write_csv("v.mp4", "a,,\n")
    finally:
        os.umask(old)
    assert oct(written.path.stat().st_mode & 0o777) == oct(0o640)


def test_error_results_replace_csv_and_vice_versa(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path)
    store.write_csv("v.mp4", "a,,\n")
    err = store.write_error("v.mp4", "InvalidVideo: no video stream")
    assert err.path.name == "v.error" and err.path.read_text() == "InvalidVideo: no video stream\n"
    assert _all_files(tmp_path) == ["v.error"]
    store.write_csv("v.mp4", "a,,\n")
    assert _all_files(tmp_path) == ["v.csv"]


def test_a_failed_write_leaves_no_temp_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = ResultsStore(tmp_path)
    store.write_csv("v.mp4", "old\n")

    def broken_replace(*args: Any, **kwargs: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError):
        store.write_csv("v.mp4", "new\n")
    assert _all_files(tmp_path) == ["v.csv"]
    assert (tmp_path / "v.csv").read_text() == "old\n"


def test_stale_temp_files_of_a_killed_writer_are_removed(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path / "results")
    assert store.remove_stale_temp_files() == 0  # no dir yet
    store.write_csv("dir/v.mp4", "a,b,c\n")
    (tmp_path / "results" / "dir" / f"{store.temp_prefix}abc123").write_bytes(b"half a res")
    (tmp_path / "results" / f"{store.temp_prefix}x").write_bytes(b"")
    assert store.remove_stale_temp_files() == 2
    assert sorted(p.relative_to(tmp_path).as_posix() for p in (tmp_path / "results").rglob("*")
                  if p.is_file()) == ["results/dir/v.csv"]


def test_replicas_sweep_their_own_temp_files_and_only_abandoned_ones_of_others(
        tmp_path: Path) -> None:
    # GIVEN two replicas sharing a results dir; replica 2 is writing right now, and a replica
    # that no longer runs left a temp file two hours ago
    now = time.time()
    one = ResultsStore(tmp_path, replica="1", clock=lambda: now)
    two = ResultsStore(tmp_path, replica="2", clock=lambda: now)
    one.write_csv("v.mp4", "a,,\n")
    own = tmp_path / f"{one.temp_prefix}k1l2"
    live = tmp_path / f"{two.temp_prefix}m3n4"
    abandoned = tmp_path / ".tmp-3.o5p6"
    for path in (own, live, abandoned):
        path.write_bytes(b"half a res")
    os.utime(abandoned, (now - 7200, now - 7200))
    # WHEN replica 1 restarts and sweeps
    assert one.remove_stale_temp_files() == 2
    # THEN its own leftover and the abandoned one are gone, replica 2's live write is not
    assert _all_files(tmp_path) == [live.name, "v.csv"]
    assert own.name.startswith(".tmp-1.") and live.name.startswith(".tmp-2.")
    # AND a replica's writes and probes use its own prefix (nothing left once they are done)
    two.probe()
    two.write_csv("w.mp4", "b,,\n")
    assert two.remove_stale_temp_files() == 1 and _all_files(tmp_path) == ["v.csv", "w.csv"]


def test_a_key_named_like_a_temp_file_is_not_swept_as_one(tmp_path: Path) -> None:
    # GIVEN results for keys that look like the store's own temp files
    store = ResultsStore(tmp_path)
    csv_file = store.write_csv(".tmp-clip.mp4", "president_trump,physics,junior\n").path
    nested = store.write_csv(".tmp-dir/clip.mp4", "mr_bean,lawyer,freshmen\n").path
    # WHEN the daemon restarts and sweeps stale temp files
    assert store.remove_stale_temp_files() == 0
    # THEN both results are still there, under names the sweep never matches
    assert csv_file.read_text() == "president_trump,physics,junior\n"
    assert nested.read_text() == "mr_bean,lawyer,freshmen\n"
    assert csv_file.name == "_.tmp-clip.csv" and nested.parent.name == "_.tmp-dir"


def test_a_failed_write_names_the_result_it_was_for(tmp_path: Path) -> None:
    # GIVEN a file standing where a key's folder should be
    (tmp_path / "dir").write_text("in the way")
    # WHEN its result is written THEN the error (logged, and kept as the last error) names the
    # result's full path, not just the component the descriptor-relative call saw
    with pytest.raises(NotADirectoryError) as info:
        ResultsStore(tmp_path).write_csv("dir/v.mp4", "a,,\n")
    assert info.value.filename == str(tmp_path / "dir" / "v.csv")
