"""The state DB: de-duplication that survives a restart, counters, last error, pruning."""

from __future__ import annotations

import threading
from pathlib import Path

from openstack_handler.state import RETENTION_S, StateDB


def test_processed_survives_reopen_and_old_entries_are_pruned(tmp_path: Path) -> None:
    path = tmp_path / "s" / "state.sqlite3"
    now = [1_000_000.0]
    with StateDB(path, clock=lambda: now[0]) as db:
        db.mark_processed("b", "dir/my clip.mp4", "e1", status="ok")
        db.incr("videos_ok")
        db.incr("videos_ok", 2)
        db.record_error("function", "RuntimeError: boom")
    with StateDB(path, clock=lambda: now[0]) as db:
        assert db.is_processed("b", "dir/my clip.mp4", "e1")
        assert not db.is_processed("b", "dir/my clip.mp4", "e2")  # a new upload: new eTag
        snap = db.snapshot()
        assert snap.counters == {"videos_ok": 3}
        assert (snap.last_error, snap.last_error_source, snap.last_error_at) == (
            "RuntimeError: boom", "function", 1_000_000.0)
    now[0] += RETENTION_S + 1
    with StateDB(path, clock=lambda: now[0]) as db:
        assert not db.is_processed("b", "dir/my clip.mp4", "e1")


def test_concurrent_writers(tmp_path: Path) -> None:
    with StateDB(tmp_path / "state.sqlite3") as db:
        def work(n: int) -> None:
            for i in range(50):
                db.incr("n")
                db.mark_processed("b", f"{n}-{i}", "e", status="ok")

        threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        snap = db.snapshot()
        assert snap.counters["n"] == 200 and snap.processed_total == 200
