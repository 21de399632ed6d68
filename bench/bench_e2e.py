"""End to end on the local cloud: N distinct course-like clips from upload to result file, for
several daemon concurrency settings, and the peer-style course baseline on the same cloud.

One LocalCloud (moto server, the Lambda endpoint with warm workers running the real function) serves
every run, so all configurations meet the same warm workers. Each run uploads the same N clips
under a fresh key prefix (4 upload threads, like `local demo`) and polls the results folder; the
clock runs from the first upload to the last result file. Runs are interleaved (ours at each
concurrency, then the baseline, repeated), so the ratio is taken within each repeat and its median
reported.

    .venv/bin/python -m bench.bench_e2e [--count 100] [--concurrency 1 2 4] [--repeat 3]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench.procs import REPO, cpu_seconds, memory_mb, run_daemon
from bench.variants import Variant, make_variants
from localcloud.cloud import EndpointSession, LocalCloud
from openstack_handler.daemon.results_store import ResultsStore
from openstack_handler.demos.daemon_config import write_daemon_config
from openstack_handler.demos.video import VideoRun

POLL_S = 0.05


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


@contextmanager
def run_baseline(cloud: LocalCloud, work: Path) -> Iterator[subprocess.Popen[bytes]]:
    """The peer-style handler (bench/baseline.py) as a process, with the daemon's config."""
    work.mkdir(parents=True, exist_ok=True)
    config = write_daemon_config(cloud, work / "daemon.toml", work / "results", work / "state")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(cloud.client_env(), PYTHONPATH=str(REPO))
    log_path = work / "baseline.log"
    with log_path.open("ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", "bench.baseline", "--config", str(config)],
                                env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 60
            while b"baseline.ready" not in log_path.read_bytes():
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"baseline did not start: {log_path.read_text()[-2000:]}")
                time.sleep(0.05)
            yield proc
        finally:
            proc.terminate()
            proc.wait(timeout=30)


def upload_and_wait(cloud: LocalCloud, variants: list[Variant], prefix: str, results: Path,
                    proc: subprocess.Popen[bytes], timeout_s: float = 600.0) -> dict[str, Any]:
    """Upload every clip as `<prefix>/<name>`, wait for its result; the run's numbers."""
    s3 = EndpointSession(cloud.moto_url).client("s3")
    bucket = cloud.provisioned.input_bucket
    store = ResultsStore(results)
    runs = [VideoRun(key=f"{prefix}/{v.path.name}", source=v.path, expected=[v.expected_name])
            for v in variants]
    cpu0 = cpu_seconds(proc.pid)
    started = time.monotonic()

    def upload(run: VideoRun) -> None:
        run.uploaded_at = time.monotonic()
        s3.upload_file(str(run.source), bucket, run.key)

    with ThreadPoolExecutor(max_workers=4) as pool:
        uploads = pool.map(upload, runs)
        pending = list(runs)
        deadline = started + timeout_s
        while pending and time.monotonic() < deadline and proc.poll() is None:
            for run in list(pending):
                path = store.path_for(run.key, ".csv")
                if path.exists():
                    run.names = [row[0] for row in csv.reader(path.read_text().splitlines())
                                 if row]
                elif store.path_for(run.key, ".error").exists():
                    run.error = store.path_for(run.key, ".error").read_text().strip()
                else:
                    continue
                run.finished_at = time.monotonic()
                pending.remove(run)
            time.sleep(POLL_S)
        list(uploads)
    wall_s = max((r.finished_at or time.monotonic()) for r in runs) - started
    latencies = [r.elapsed_s for r in runs if r.elapsed_s is not None]
    return {"videos": len(runs), "done": len(latencies),
            "correct": sum(bool(r.correct) for r in runs),
            "wall_s": round(wall_s, 2), "throughput_per_s": round(len(runs) / wall_s, 2),
            "latency_p50_s": round(statistics.median(latencies), 2) if latencies else None,
            "latency_p90_s": round(percentile(latencies, 90), 2) if latencies else None,
            "latency_max_s": round(max(latencies), 2) if latencies else None,
            "latencies_s": [round(x, 3) for x in sorted(latencies)],
            "handler_cpu_s": round(cpu_seconds(proc.pid) - cpu0, 2), **memory_mb(proc.pid)}


def summarize(name: str, runs: list[dict[str, Any]]) -> dict[str, Any]:
    keys = ("wall_s", "throughput_per_s", "latency_p50_s", "latency_p90_s", "latency_max_s",
            "handler_cpu_s")
    best = min(runs, key=lambda r: abs(r["wall_s"] - statistics.median(x["wall_s"] for x in runs)))
    return {"config": name, "repeats": len(runs),
            **{k: round(statistics.median(r[k] for r in runs), 2) for k in keys},
            "wall_min_s": min(r["wall_s"] for r in runs),
            "wall_max_s": max(r["wall_s"] for r in runs),
            "correct": min(r["correct"] for r in runs), "videos": runs[0]["videos"],
            "peak_rss_mb": max(r["peak_rss_mb"] for r in runs),
            "median_run_latencies_s": best["latencies_s"],
            "runs": [{k: v for k, v in r.items() if k != "latencies_s"} for r in runs]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench_e2e")
    parser.add_argument("--data", type=Path, default=Path(os.environ.get(
        "SHARED_DATA", REPO.parent / "shared" / "data")) / "cse546-2023")
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--workers", type=int, default=0,
                        help="warm function workers (default: the largest concurrency)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-baseline", action="store_true")
    parser.add_argument("--cache", type=Path, default=REPO / ".cache" / "bench" / "variants")
    parser.add_argument("--work", type=Path, default=REPO / ".cache" / "bench" / "e2e")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "out")
    args = parser.parse_args(argv)
    began = time.monotonic()

    def log(line: str) -> None:
        print(f"[{time.monotonic() - began:6.1f} s] {line}", file=sys.stderr, flush=True)

    variants = make_variants(args.data, args.cache, args.count)
    log(f"{len(variants)} clips ready in {args.cache}")
    workers = args.workers or max(args.concurrency)
    configs = [f"ours-c{c}" for c in args.concurrency] + ([] if args.no_baseline else ["baseline"])
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in configs}
    cloud = LocalCloud(gallery=args.data / "encoding", students=args.data / "student_data.json",
                       concurrency=workers, work_dir=args.work / "cloud")
    with cloud:
        log(f"local cloud up, {workers} warm workers")
        for rep in range(args.repeat):
            for name in configs:
                work = args.work / f"r{rep}-{name}"
                # A run's results and dedupe state must not survive into the next bench: stale
                # files would count as instant results, stale state as duplicates.
                shutil.rmtree(work, ignore_errors=True)
                prefix = f"r{rep}-{name}"
                if name == "baseline":
                    with run_baseline(cloud, work) as proc:
                        run = upload_and_wait(cloud, variants, prefix, work / "results", proc)
                else:
                    with run_daemon(cloud, work, concurrency=int(name.split("-c")[1])) as daemon:
                        daemon.wait_ready()
                        run = upload_and_wait(cloud, variants, prefix, work / "results",
                                              daemon.proc)
                results[name].append(run)
                log(f"repeat {rep} {name}: {run['wall_s']} s, {run['correct']}/{run['videos']} "
                    f"correct, p50 {run['latency_p50_s']} s")
    summary = [summarize(name, runs) for name, runs in results.items()]
    report: dict[str, Any] = {"count": args.count, "workers": workers, "cpus": os.cpu_count(),
                              "repeats": args.repeat, "configs": summary}
    if "baseline" in results:
        report["speedup_vs_baseline"] = {
            name: round(statistics.median(b["wall_s"] / o["wall_s"] for o, b in
                                          zip(results[name], results["baseline"])), 2)
            for name in results if name != "baseline"}
    report["bench_s"] = round(time.monotonic() - began, 1)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "e2e.json").write_text(json.dumps(report, indent=1) + "\n")
    return 0 if all(s["correct"] == s["videos"] for s in summary) else 1


if __name__ == "__main__":
    sys.exit(main())
