"""The state DB: de-duplication that survives a restart, counters, last error, pruning."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from openstack_handler.daemon.state import RETENTION_S, StateDB


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


# -- results owed to the results dir ---------------------------------------------------------------

def test_a_result_written_before_its_invocation_returned_is_not_owed(tmp_path: Path) -> None:
    with StateDB(tmp_path / "state.sqlite3") as db:
        db.expect_results([("b", "early.mp4", "e1"), ("b", "late.mp4", "e2")])
        assert db.settle_result("b", "early.mp4", '"e1"') == 1  # the drainer was first
        assert db.owe_result("b", "early.mp4", "e1", request_id="r1") is False
        assert db.owe_result("b", "late.mp4", "e2", request_id="r2") is True
        assert [(o.key, o.request_id) for o in db.owed_results()] == [("late.mp4", "r2")]
        assert db.settle_result("b", "late.mp4", "e2") == 1
        assert db.owed_results() == []


def test_an_invocation_that_failed_owes_nothing_and_a_settled_one_stays_settled(
        tmp_path: Path) -> None:
    with StateDB(tmp_path / "state.sqlite3") as db:
        db.expect_results([("b", "failed.mp4", "e1"), ("b", "ok.mp4", "e2")])
        assert db.owe_result("b", "ok.mp4", "e2", request_id=None)
        db.drop_unfinished([("b", "failed.mp4", "e1"), ("b", "ok.mp4", "e2")])
        assert db.owe_result("b", "failed.mp4", "e1", request_id=None) is False
        assert [o.key for o in db.owed_results()] == ["ok.mp4"]  # owed stays owed
        assert db.settle_result("b", "ok.mp4", None) == 1  # a result without an eTag: any


def test_a_replica_owes_its_own_results_and_any_replica_s_drainer_settles_them(
        tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite3"
    with StateDB(path, owner="1") as one, StateDB(path, owner="2") as two:
        one.expect_results([("b", "v.mp4", "e")])
        assert one.owe_result("b", "v.mp4", "e", request_id="r")
        assert two.owed_results() == [] and len(one.owed_results()) == 1
        assert two.settle_result("b", "v.mp4", "e") == 1  # replica 2's drainer wrote it
        assert one.owed_results() == []


def test_a_restart_clears_what_its_earlier_life_expected_and_says_what_it_owed(
        tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite3"
    with StateDB(path, owner="1") as db:
        db.expect_results([("b", "running.mp4", "e1"), ("b", "owed.mp4", "e2")])
        db.owe_result("b", "owed.mp4", "e2", request_id="r2")
    with StateDB(path, owner="2") as other:
        other.expect_results([("b", "theirs.mp4", "e3")])
        other.owe_result("b", "theirs.mp4", "e3", request_id="r3")
    with StateDB(path, owner="1") as again:
        assert [o.key for o in again.forget_awaited()] == ["owed.mp4"]
        assert again.owe_result("b", "running.mp4", "e1", request_id=None) is False
    with StateDB(path, owner="2") as other:
        assert [o.key for o in other.owed_results()] == ["theirs.mp4"]


def _open_state_db(path: Path, errors: Any) -> None:
    try:
        StateDB(path).close()
    except Exception as exc:  # noqa: BLE001 -- reported to the test, which fails on it
        errors.put(repr(exc))


def test_replicas_that_open_a_new_state_db_at_once_all_get_it(tmp_path: Path) -> None:
    # GIVEN four daemons (processes) that start together on a state dir with no DB yet, 40 times
    # (before the retry, SQLite answered 3 of 90 such opens "database is locked")
    import multiprocessing

    context = multiprocessing.get_context("fork")
    errors = context.Queue()
    for round_ in range(40):
        path = tmp_path / str(round_) / "state.sqlite3"
        procs = [context.Process(target=_open_state_db, args=(path, errors)) for _ in range(4)]
        for proc in procs:
            proc.start()
        for proc in procs:
            proc.join(30)
    # THEN every one of them opened it
    found = []
    while not errors.empty():
        found.append(errors.get())
    assert found == []
