"""The daemon's small persistent state: a sqlite DB (WAL) in ``state_dir``.

- ``processed``: (bucket, key, etag) of every video whose invocation succeeded, so a redelivered or
  duplicated S3 event is acknowledged without invoking the function again, across restarts.
  Entries older than SQS's longest retention (14 days) can no longer be redelivered and are pruned.
- ``counters``: what this daemon did (videos ok/failed, results written, …), shown by ``status``.
- ``last_error``: the latest failure with its time.
- ``last_duplicate``: the latest delivery dropped as a duplicate, and why (``status`` shows it).
- ``invocations``: the latest :data:`RECENT_INVOCATIONS` invocations of each target (their
  durations give ``status`` its p50/p95); the totals — invocations, failures, billed MB·ms — are
  ``target.<name>.*`` counters.
- ``awaited``: the results owed to the results dir. A video is expected before its invocation
  starts and owed once the invocation succeeded; whichever drainer writes its result (the
  replicas of a VM share this DB and the output queue) settles it. On stop the drainer waits for
  what its daemon owes (openstack_handler.daemon.drainer), instead of guessing from an empty receive.

``openstack-handler forget`` deletes a key's ``processed`` rows, so that its next upload (or
event) is processed again.

One connection shared by the daemon's threads behind a lock (writes are tiny and rare).
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

from tenacity import Retrying, retry_if_exception, stop_after_delay, wait_random

RETENTION_S = 14 * 24 * 3600
#: invocations kept per target for the duration percentiles.
RECENT_INVOCATIONS = 1000
TARGET_COUNTER = "target."

_SCHEMA = """
CREATE TABLE IF NOT EXISTS processed (
    bucket TEXT NOT NULL, key TEXT NOT NULL, etag TEXT NOT NULL,
    status TEXT NOT NULL, processed_at REAL NOT NULL,
    PRIMARY KEY (bucket, key, etag)
);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS last_error (
    id INTEGER PRIMARY KEY CHECK (id = 1), at REAL NOT NULL, source TEXT NOT NULL,
    message TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS awaited (
    bucket TEXT NOT NULL, key TEXT NOT NULL, etag TEXT NOT NULL,
    owner TEXT NOT NULL, state TEXT NOT NULL, request_id TEXT, since REAL NOT NULL,
    PRIMARY KEY (bucket, key, etag)
);
CREATE TABLE IF NOT EXISTS invocations (
    target TEXT NOT NULL, at REAL NOT NULL, ok INTEGER NOT NULL, duration_ms REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS invocations_by_target ON invocations (target);
CREATE TABLE IF NOT EXISTS last_duplicate (
    id INTEGER PRIMARY KEY CHECK (id = 1), at REAL NOT NULL, bucket TEXT NOT NULL,
    key TEXT NOT NULL, etag TEXT NOT NULL, why TEXT NOT NULL
);
"""


@dataclass(frozen=True)
class ProcessedRecord:
    """One remembered video: de-duplication drops its (bucket, key, eTag) until forgotten."""

    bucket: str
    key: str
    etag: str
    status: str
    processed_at: float


@dataclass(frozen=True)
class OwedResult:
    """A video whose invocation succeeded and whose result file is not written yet."""

    bucket: str
    key: str
    etag: str
    request_id: str | None
    since: float  #: when the invocation started (wall clock)


@dataclass(frozen=True)
class DroppedDuplicate:
    """The latest delivery dropped as a duplicate."""

    at: float
    bucket: str
    key: str
    etag: str
    why: str


@dataclass(frozen=True)
class TargetTotals:
    """What one target did, over every run of the daemons sharing this DB."""

    name: str
    invocations: int = 0
    failures: int = 0
    billed_mb_ms: int = 0  #: Σ Memory Size × Billed Duration of the REPORT lines
    unreported: int = 0  #: invocations whose answer carried no REPORT line
    p50_ms: float | None = None  #: of the latest RECENT_INVOCATIONS
    p95_ms: float | None = None

    @property
    def gb_seconds(self) -> float:
        return self.billed_mb_ms / 1024 / 1000


def _percentile(ordered: list[float], q: float) -> float | None:
    if not ordered:
        return None
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


@dataclass(frozen=True)
class StateSnapshot:
    """A read of the state for ``status``."""

    counters: dict[str, int] = field(default_factory=dict)
    processed_total: int = 0
    last_error: str | None = None
    last_error_source: str | None = None
    last_error_at: float | None = None
    last_duplicate: DroppedDuplicate | None = None


class StateDB:
    """Thread-safe access to the state DB; use as a context manager or call :meth:`close`.

    *owner* names this daemon among those that share the DB (its replica name; "" alone): the
    results it owes are its own, whoever writes them.
    """

    def __init__(self, path: str | Path, *, clock=time.time, owner: str = "") -> None:
        self.path = Path(path)
        self.owner = owner
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._clock = clock
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(self.path, check_same_thread=False, timeout=10,
                                     isolation_level=None)
        # Replicas started together open a new DB at once, and SQLite answers the switch to WAL
        # "database is locked" at once, without waiting out the busy timeout: try again.
        for attempt in Retrying(retry=retry_if_exception(_is_locked), stop=stop_after_delay(10),
                                wait=wait_random(0.01, 0.1), reraise=True):
            with attempt, self._lock:
                self._conn.execute("PRAGMA journal_mode=WAL")
                self._conn.execute("PRAGMA synchronous=NORMAL")
                self._conn.executescript(_SCHEMA)
                self._conn.execute("DELETE FROM processed WHERE processed_at < ?",
                                   (self._clock() - RETENTION_S,))

    # -- de-duplication ----------------------------------------------------------------------

    def is_processed(self, bucket: str, key: str, etag: str) -> bool:
        with self._lock:
            row = self._conn.execute(
                "SELECT 1 FROM processed WHERE bucket = ? AND key = ? AND etag = ?",
                (bucket, key, etag)).fetchone()
        return row is not None

    def mark_processed(self, bucket: str, key: str, etag: str, status: str) -> None:
        with self._lock:
            self._conn.execute(
                "INSERT OR REPLACE INTO processed VALUES (?, ?, ?, ?, ?)",
                (bucket, key, etag, status, self._clock()))

    def processed_record(self, bucket: str, key: str, etag: str) -> ProcessedRecord | None:
        with self._lock:
            row = self._conn.execute(
                "SELECT bucket, key, etag, status, processed_at FROM processed "
                "WHERE bucket = ? AND key = ? AND etag = ?", (bucket, key, etag)).fetchone()
        return None if row is None else ProcessedRecord(*row)

    def forget(self, key: str, bucket: str | None = None) -> list[ProcessedRecord]:
        """Forget every remembered version of *key* (in *bucket*, or in any): its next event is
        processed again. Returns what was forgotten."""
        where, params = ("key = ?", [key]) if bucket is None else \
            ("key = ? AND bucket = ?", [key, bucket])
        with self._lock:
            rows = self._conn.execute(
                f"SELECT bucket, key, etag, status, processed_at FROM processed WHERE {where}",
                params).fetchall()
            self._conn.execute(f"DELETE FROM processed WHERE {where}", params)
        return [ProcessedRecord(*row) for row in rows]

    def record_duplicate(self, bucket: str, key: str, etag: str, why: str) -> None:
        with self._lock:
            self._conn.execute("INSERT OR REPLACE INTO last_duplicate VALUES (1, ?, ?, ?, ?, ?)",
                               (self._clock(), bucket, key, etag, why[:2000]))

    # -- results owed to the results dir ----------------------------------------------------

    def expect_results(self, identities: Iterable[tuple[str, str, str]]) -> None:
        """Before invoking: these videos' results may come (the function sends each one before
        its invocation returns, so a drainer may write it before the invoke's answer is in)."""
        now = self._clock()
        with self._lock:
            self._conn.executemany(
                "INSERT OR REPLACE INTO awaited VALUES (?, ?, ?, ?, 'invoking', NULL, ?)",
                [(bucket, key, etag, self.owner, now) for bucket, key, etag in identities])

    def owe_result(self, bucket: str, key: str, etag: str, request_id: str | None) -> bool:
        """The invocation succeeded: its result is owed, unless a drainer wrote it already
        (returns whether it is still owed)."""
        with self._lock:
            cursor = self._conn.execute(
                "UPDATE awaited SET state = 'owed', request_id = ? WHERE bucket = ? AND key = ? "
                "AND etag = ? AND owner = ? AND state = 'invoking'",
                (request_id, bucket, key, etag, self.owner))
        return cursor.rowcount == 1

    def settle_result(self, bucket: str, key: str, etag: str | None) -> int:
        """A result file was written (by any drainer sharing this DB); a result without an eTag
        settles every version of the key. Returns how many expected or owed rows it settled."""
        etag = str(etag).strip('"') if etag else ""
        with self._lock:
            cursor = self._conn.execute(
                "DELETE FROM awaited WHERE bucket = ? AND key = ? AND (etag = ? OR ? = '')",
                (bucket, key, etag, etag))
        return cursor.rowcount

    def drop_unfinished(self, identities: Iterable[tuple[str, str, str]]) -> None:
        """The invocation ended without success: no result is owed for it."""
        with self._lock:
            self._conn.executemany(
                "DELETE FROM awaited WHERE bucket = ? AND key = ? AND etag = ? AND owner = ? "
                "AND state = 'invoking'",
                [(bucket, key, etag, self.owner) for bucket, key, etag in identities])

    def owed_results(self) -> list[OwedResult]:
        """What this daemon owes now, oldest first."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT bucket, key, etag, request_id, since FROM awaited "
                "WHERE owner = ? AND state = 'owed' ORDER BY since", (self.owner,)).fetchall()
        return [OwedResult(*row) for row in rows]

    def forget_awaited(self) -> list[OwedResult]:
        """At start: clear what an earlier life of this daemon expected (its invocations are
        over); returns what it still owed (their results, if they came, are on the output
        queue and are drained as usual)."""
        owed = self.owed_results()
        with self._lock:
            self._conn.execute("DELETE FROM awaited WHERE owner = ?", (self.owner,))
        return owed

    # -- counters and errors -----------------------------------------------------------------

    def incr(self, name: str, by: int = 1) -> None:
        with self._lock:
            self._conn.execute(
                "INSERT INTO counters VALUES (?, ?) "
                "ON CONFLICT(name) DO UPDATE SET value = value + excluded.value", (name, by))

    def record_invocation(self, target: str, *, ok: bool, duration_ms: float,
                          billed_ms: int | None = None, memory_mb: int | None = None) -> None:
        """One invocation of *target*: its totals, and its duration among the recent ones."""
        prefix = f"{TARGET_COUNTER}{target}."
        deltas = {"invocations": 1, "failures": 0 if ok else 1,
                  "billed_mb_ms": (billed_ms or 0) * (memory_mb or 0),
                  "unreported": 0 if billed_ms is not None else 1}
        with self._lock:
            self._conn.execute("BEGIN")
            try:
                self._conn.executemany(
                    "INSERT INTO counters VALUES (?, ?) "
                    "ON CONFLICT(name) DO UPDATE SET value = value + excluded.value",
                    [(prefix + name, value) for name, value in deltas.items()])
                cursor = self._conn.execute("INSERT INTO invocations VALUES (?, ?, ?, ?)",
                                            (target, self._clock(), int(ok), duration_ms))
                if (cursor.lastrowid or 0) % 100 == 0:
                    self._conn.execute(
                        "DELETE FROM invocations WHERE target = ? AND rowid <= (SELECT rowid "
                        "FROM invocations WHERE target = ? ORDER BY rowid DESC LIMIT 1 "
                        "OFFSET ?)", (target, target, RECENT_INVOCATIONS))
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise

    def target_totals(self) -> list[TargetTotals]:
        """Every target that has run something, by name."""
        with self._lock:
            rows = self._conn.execute("SELECT name, value FROM counters WHERE name LIKE ?",
                                      (TARGET_COUNTER + "%",)).fetchall()
            durations: dict[str, list[float]] = {}
            for target, duration in self._conn.execute(
                    "SELECT target, duration_ms FROM invocations ORDER BY rowid DESC"):
                recent = durations.setdefault(target, [])
                if len(recent) < RECENT_INVOCATIONS:
                    recent.append(duration)
        totals: dict[str, dict[str, int]] = {}
        for name, value in rows:
            target, _, field_name = name[len(TARGET_COUNTER):].rpartition(".")
            totals.setdefault(target, {})[field_name] = value
        result = []
        for target in sorted(totals):
            ordered = sorted(durations.get(target, []))
            fields = {k: v for k, v in totals[target].items()
                      if k in ("invocations", "failures", "billed_mb_ms", "unreported")}
            result.append(TargetTotals(target, **fields, p50_ms=_percentile(ordered, 50),
                                       p95_ms=_percentile(ordered, 95)))
        return result

    def record_error(self, source: str, message: str) -> None:
        with self._lock:
            self._conn.execute("INSERT OR REPLACE INTO last_error VALUES (1, ?, ?, ?)",
                               (self._clock(), source, message[:2000]))

    def snapshot(self) -> StateSnapshot:
        with self._lock:
            counters = dict(self._conn.execute("SELECT name, value FROM counters").fetchall())
            (total,) = self._conn.execute("SELECT COUNT(*) FROM processed").fetchone()
            err = self._conn.execute("SELECT at, source, message FROM last_error").fetchone()
            dup = self._conn.execute(
                "SELECT at, bucket, key, etag, why FROM last_duplicate").fetchone()
        duplicate = None if dup is None else DroppedDuplicate(*dup)
        if err is None:
            return StateSnapshot(counters=counters, processed_total=total,
                                 last_duplicate=duplicate)
        return StateSnapshot(counters=counters, processed_total=total, last_error=err[2],
                             last_error_source=err[1], last_error_at=err[0],
                             last_duplicate=duplicate)

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _is_locked(exc: BaseException) -> bool:
    return isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc)
