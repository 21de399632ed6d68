"""`openstack-handler local demo`: the main job on one machine.

Brings up the local cloud, starts the real daemon as a subprocess against it, uploads every file
of a folder to the input bucket (concurrently), waits until each upload has a `.csv` or `.error`
in the results folder, stops the daemon with SIGTERM and prints a table. Uploads, invocations and
result writes overlap: nothing waits for one video before starting the next.
"""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO

from localcloud.cloud import EndpointSession, LocalCloud
from localcloud.workdir import WorkDir
from openstack_handler.daemon.results_store import ResultsStore
from openstack_handler.demos.daemon_config import write_daemon_config

POLL_INTERVAL_S = 0.05
PLACEHOLDER_NAMES = frozenset({"unknown_person", "no_persons_found"})


@dataclass
class VideoRun:
    """One upload and what became of it."""

    key: str
    source: Path
    uploaded_at: float = 0.0
    finished_at: float | None = None
    result_path: Path | None = None
    names: list[str] = field(default_factory=list)
    error: str | None = None
    expected: list[str] | None = None

    @property
    def elapsed_s(self) -> float | None:
        return None if self.finished_at is None else self.finished_at - self.uploaded_at

    @property
    def correct(self) -> bool | None:
        """Right people found? A bystander who is not enrolled (an extra `unknown_person` row
        beside the expected students) is a true answer, not an error."""
        if self.expected is None:
            return None
        if self.error is not None:
            return False
        wanted = sorted(n for n in self.expected if n not in PLACEHOLDER_NAMES)
        if wanted:
            return sorted(n for n in self.names if n not in PLACEHOLDER_NAMES) == wanted
        return self.names == self.expected


@dataclass(frozen=True)
class DemoReport:
    runs: list[VideoRun]
    wall_s: float
    daemon_exit: int | None
    log_dir: Path | None  #: the kept scratch folder; None once removed after a clean run
    serverless: bool = False  #: S3 invoked the function: there was no daemon

    @property
    def complete(self) -> bool:
        return all(run.finished_at is not None for run in self.runs)

    @property
    def ok(self) -> bool:
        return (self.complete and (self.serverless or self.daemon_exit == 0)
                and all(run.correct is not False for run in self.runs))


def read_expected(path: Path) -> dict[str, list[str]]:
    """`video,names` CSV (names space-separated) → expected names per video file name."""
    with path.open(newline="") as handle:
        return {row["video"]: row["names"].split() for row in csv.DictReader(handle)}


def run_local_demo(*, videos: Path, gallery: Path, students: Path, results: Path,
                   expected: Path | None = None, function_concurrency: int = 2,
                   daemon_concurrency: int = 2, timeout_s: float = 600.0,
                   work_dir: Path | None = None, keep_work_dir: bool = False,
                   out: IO[str] | None = None) -> DemoReport:
    """Run the whole pipeline on every file in *videos*; see the module docstring. The scratch
    folder (logs, the daemon's config and state) goes after a run that is ok, unless
    *keep_work_dir*; otherwise it is kept and named."""
    out = out or sys.stdout
    files = sorted(p for p in videos.iterdir() if p.is_file() and not p.name.startswith("."))
    if not files:
        raise ValueError(f"no videos in {videos}")
    expectations = read_expected(expected) if expected else {}
    store = ResultsStore(results)
    runs = [VideoRun(key=p.name, source=p, expected=expectations.get(p.name)) for p in files]
    for run in runs:  # a stale result from an earlier demo must not count as this one's
        for suffix in (".csv", ".error"):
            store.path_for(run.key, suffix).unlink(missing_ok=True)
    results.mkdir(parents=True, exist_ok=True)
    scratch = WorkDir("openstack-handler-demo-", given=work_dir, keep=keep_work_dir)
    work_dir = scratch.path

    print(f"starting the local cloud ({function_concurrency} warm function workers)...",
          file=out, flush=True)
    try:
        report = _run(runs, store, results, gallery, students, work_dir, function_concurrency,
                      daemon_concurrency, timeout_s, out)
    except BaseException:
        scratch.finish(False)
        raise
    kept = scratch.finish(report.ok, announce=False)  # the report's last line says where
    report = replace(report, log_dir=work_dir if kept else None)
    print(render_report(report), file=out, flush=True)
    return report


def _run(runs: list[VideoRun], store: ResultsStore, results: Path, gallery: Path,
         students: Path, work_dir: Path, function_concurrency: int, daemon_concurrency: int,
         timeout_s: float, out: IO[str]) -> DemoReport:
    with LocalCloud(gallery=gallery, students=students, concurrency=function_concurrency,
                    work_dir=work_dir) as cloud:
        config = write_daemon_config(cloud, work_dir / "daemon.toml", results,
                                           work_dir / "state", daemon_concurrency)
        env = {**_without_aws(os.environ), **cloud.client_env()}
        with (work_dir / "daemon.log").open("ab") as daemon_log:
            daemon = subprocess.Popen(
                [sys.executable, "-m", "openstack_handler", "run", "--config", str(config),
                 "--log-format", "json"],
                env=env, stdout=daemon_log, stderr=subprocess.STDOUT)
            try:
                print(f"uploading {len(runs)} videos; the daemon (pid {daemon.pid}) is running",
                      file=out, flush=True)
                started = time.monotonic()
                _upload_all(EndpointSession(cloud.moto_url).client("s3"),
                            cloud.provisioned.input_bucket, runs)
                _wait_for_results(runs, store, daemon, deadline=started + timeout_s)
                wall_s = time.monotonic() - started
            finally:
                daemon_exit = _stop(daemon)
    return DemoReport(runs=runs, wall_s=wall_s, daemon_exit=daemon_exit, log_dir=work_dir)


def _upload_all(s3: object, bucket: str, runs: list[VideoRun]) -> None:
    def upload(run: VideoRun) -> None:
        run.uploaded_at = time.monotonic()
        s3.upload_file(str(run.source), bucket, run.key)  # type: ignore[attr-defined]

    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(upload, runs))


def _wait_for_results(runs: list[VideoRun], store: ResultsStore,
                      daemon: subprocess.Popen[bytes], *, deadline: float) -> None:
    pending = list(runs)
    while pending and time.monotonic() < deadline and daemon.poll() is None:
        for run in list(pending):
            csv_path, error_path = store.path_for(run.key, ".csv"), store.path_for(run.key, ".error")
            if csv_path.exists():
                run.result_path = csv_path
                run.names = [row[0] for row in csv.reader(csv_path.read_text().splitlines())
                             if row]
            elif error_path.exists():
                run.result_path = error_path
                run.error = error_path.read_text().strip()
            else:
                continue
            run.finished_at = time.monotonic()
            pending.remove(run)
        time.sleep(POLL_INTERVAL_S)


def _stop(daemon: subprocess.Popen[bytes], timeout_s: float = 60.0) -> int | None:
    if daemon.poll() is None:
        daemon.send_signal(signal.SIGTERM)
    try:
        return daemon.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        daemon.kill()
        daemon.wait()
        return None


def _without_aws(env: os._Environ[str] | dict[str, str]) -> dict[str, str]:
    """The caller's environment minus its AWS settings: the demo must never reach a real account."""
    return {k: v for k, v in env.items() if not k.startswith("AWS_")}


def render_report(report: DemoReport) -> str:
    rows = [("video", "result", "elapsed s", "check")]
    for run in report.runs:
        if run.finished_at is None:
            result = "(no result)"
        elif run.error is not None:
            result = f"error: {run.error}"
        else:
            result = ", ".join(run.names)
        elapsed = "-" if run.elapsed_s is None else f"{run.elapsed_s:.2f}"
        check = {None: "", True: "ok", False: f"WRONG (want {run.expected})"}[run.correct]
        rows.append((run.key, result, elapsed, check))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip()
             for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    done = sum(run.finished_at is not None for run in report.runs)
    lines.append("")
    logs = (f"logs kept in {report.log_dir}" if report.log_dir is not None
            else "logs removed (--keep-work-dir keeps them)")
    how = ("serverless: S3 invoked the function, no daemon" if report.serverless
           else f"daemon exit code {report.daemon_exit}")
    lines.append(f"{done}/{len(report.runs)} videos have results in {report.wall_s:.2f} s "
                 f"(first upload to last result); {how}; {logs}")
    return "\n".join(lines)
