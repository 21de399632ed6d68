"""Orchestration alone: the real daemon against a synthetic function of known latency.

* Scaling: a function that takes exactly ``latency`` seconds (2 s, like a warm course Lambda),
  function workers ≥ daemon concurrency; for each concurrency N, ``rounds × N`` S3-event messages
  are put straight on the input queue (no uploads) and the clock runs from the first send until
  the last ``results/<key>.csv`` exists. Achieved throughput is compared with the ideal N ÷ latency.
* No-op: the same with a function that answers at once: messages per second through the whole
  daemon path (receive, invoke, delete, drain, write the file) and the daemon's CPU per message
  (utime + stime from /proc/<pid>/stat over the run).
* Footprint: the daemon's RSS, whether torch is mapped into it, and its CPU while idle with the
  default 20 s long poll.

    .venv/bin/python -m bench.orchestration [--quick] [--out bench/out]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench.procs import DaemonProc, cpu_seconds, maps_torch, memory_mb, run_daemon
from localcloud.cloud import EndpointSession, LocalCloud
from openstack_handler.provisioning import ResourceSpec

REPO = Path(__file__).resolve().parents[1]
POLL_S = 0.02


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


@contextmanager
def synthetic_cloud(work: Path, *, handler: str, workers: int,
                    latency_s: float = 2.0) -> Iterator[LocalCloud]:
    """A LocalCloud whose function is `bench.synthetic:<handler>` with *workers* warm workers."""
    work.mkdir(parents=True, exist_ok=True)
    gallery = work / "gallery.unused"  # the synthetic function reads no gallery
    gallery.write_bytes(b"")
    cloud = LocalCloud(gallery=gallery, handler=f"bench.synthetic:{handler}",
                       resources=ResourceSpec(prefix="bench-orch", function_timeout_s=30),
                       concurrency=workers, work_dir=work / "cloud",
                       extra_environment={"SYNTHETIC_LATENCY_S": str(latency_s)})
    with cloud:
        yield cloud


def event_body(bucket: str, key: str) -> str:
    etag = hashlib.md5(key.encode()).hexdigest()
    return json.dumps({"Records": [{
        "eventVersion": "2.1", "eventSource": "aws:s3", "eventName": "ObjectCreated:Put",
        "s3": {"bucket": {"name": bucket}, "object": {"key": key, "eTag": etag, "size": 1024}}}]})


def measure(cloud: LocalCloud, daemon: DaemonProc, *, prefix: str, messages: int,
            timeout_s: float = 300.0) -> dict[str, Any]:
    """Send *messages* events for keys `<prefix>-NNNN.mp4`, wait for every result file."""
    sqs = EndpointSession(cloud.moto_url).client("sqs")
    p = cloud.provisioned
    results = daemon.config.parent / "results"
    keys = [f"{prefix}-{i:04d}.mp4" for i in range(messages)]
    wanted = {k[:-4] + ".csv" for k in keys}
    sent_at: dict[str, float] = {}
    others = {"moto": cloud.moto.pid if cloud.moto else None,
              "lambda_endpoint": getattr(cloud.endpoint, "pid", None)}
    others = {name: pid for name, pid in others.items() if pid}
    others0 = {name: cpu_seconds(pid) for name, pid in others.items()}
    cpu0 = cpu_seconds(daemon.pid)
    started = time.monotonic()
    for first in range(0, messages, 10):
        chunk = keys[first:first + 10]
        now = time.time()
        sqs.send_message_batch(QueueUrl=p.input_queue_url, Entries=[
            {"Id": str(i), "MessageBody": event_body(p.input_bucket, k)}
            for i, k in enumerate(chunk)])
        sent_at.update((k[:-4] + ".csv", now) for k in chunk)
    deadline = started + timeout_s
    done: set[str] = set()
    while time.monotonic() < deadline and daemon.proc.poll() is None:
        if results.is_dir():
            done = wanted.intersection(os.listdir(results))
        if len(done) == len(wanted):
            break
        time.sleep(POLL_S)
    wall_s = time.monotonic() - started
    cpu_s = cpu_seconds(daemon.pid) - cpu0
    other_ms = {f"{name}_cpu_ms_per_message": round((cpu_seconds(pid) - others0[name])
                                                     / messages * 1000, 3)
                for name, pid in others.items()}
    if len(done) != len(wanted):
        raise RuntimeError(f"{len(done)}/{messages} results after {wall_s:.1f} s; "
                           f"daemon log tail:\n{daemon.tail()}")
    latencies = [(results / name).stat().st_mtime - sent_at[name] for name in wanted]
    return {"messages": messages, "wall_s": round(wall_s, 3),
            "throughput_per_s": round(messages / wall_s, 2),
            "daemon_cpu_s": round(cpu_s, 3),
            "daemon_cpu_ms_per_message": round(cpu_s / messages * 1000, 3), **other_ms,
            "latency_p50_s": round(statistics.median(latencies), 3),
            "latency_p90_s": round(percentile(latencies, 90), 3),
            "latency_max_s": round(max(latencies), 3),
            **memory_mb(daemon.pid)}


def summarize(concurrency: int, runs: list[dict[str, Any]], ideal: float | None) -> dict[str, Any]:
    med = {k: round(statistics.median(r[k] for r in runs), 3)
           for k in ("wall_s", "throughput_per_s", "daemon_cpu_ms_per_message", "latency_p50_s",
                     "moto_cpu_ms_per_message", "lambda_endpoint_cpu_ms_per_message")
           if k in runs[0]}
    row: dict[str, Any] = {"concurrency": concurrency, "repeats": len(runs),
                           "messages": runs[0]["messages"], **med,
                           "throughput_min": min(r["throughput_per_s"] for r in runs),
                           "throughput_max": max(r["throughput_per_s"] for r in runs),
                           "daemon_peak_rss_mb": max(r["peak_rss_mb"] for r in runs),
                           "runs": runs}
    if ideal is not None:
        row["ideal_per_s"] = round(ideal, 3)
        row["efficiency"] = round(med["throughput_per_s"] / ideal, 4)
    return row


def scaling(work: Path, *, concurrencies: Sequence[int], latency_s: float, rounds: int,
            repeats: int, log=print) -> list[dict[str, Any]]:
    """The fixed-latency sweep; one daemon per concurrency, *repeats* bursts each."""
    rows = []
    with synthetic_cloud(work / "scaling", handler="fixed_latency", workers=max(concurrencies),
                         latency_s=latency_s) as cloud:
        for c in concurrencies:
            log(f"starting the daemon, concurrency {c}")
            with run_daemon(cloud, work / "scaling" / f"c{c}", concurrency=c) as daemon:
                daemon.wait_ready()
                runs = [measure(cloud, daemon, prefix=f"c{c}-r{r}", messages=rounds * c)
                        for r in range(repeats)]
            row = summarize(c, runs, ideal=c / latency_s)
            log(f"latency {latency_s} s, concurrency {c}: {row['throughput_per_s']} msg/s "
                f"= {row['efficiency']:.1%} of ideal {row['ideal_per_s']}")
            rows.append(row)
    return rows


def noop_and_footprint(work: Path, *, concurrencies: Sequence[int], messages: int, repeats: int,
                       idle_s: float, log=print) -> dict[str, Any]:
    """No-op throughput per concurrency, then the idle daemon's CPU and memory."""
    rows = []
    with synthetic_cloud(work / "noop", handler="noop", workers=max(concurrencies)) as cloud:
        for c in concurrencies:
            with run_daemon(cloud, work / "noop" / f"c{c}", concurrency=c) as daemon:
                daemon.wait_ready()
                measure(cloud, daemon, prefix=f"warm{c}", messages=2 * c)  # connections, caches
                runs = [measure(cloud, daemon, prefix=f"n{c}-r{r}", messages=messages)
                        for r in range(repeats)]
            row = summarize(c, runs, ideal=None)
            log(f"no-op, concurrency {c}: {row['throughput_per_s']} msg/s, "
                f"{row['daemon_cpu_ms_per_message']} ms daemon CPU per message")
            rows.append(row)
        idle = idle_footprint(cloud, work / "noop" / "idle", idle_s=idle_s)
        log(f"idle: {idle['cpu_percent']} % CPU over {idle_s} s, RSS {idle['rss_mb']} MB")
    return {"noop": rows, "idle": idle}


def idle_footprint(cloud: LocalCloud, work: Path, *, idle_s: float) -> dict[str, Any]:
    """The daemon with the default long poll (20 s) and empty queues."""
    with run_daemon(cloud, work, concurrency=4, wait_time_s=None, hard_stop=True) as daemon:
        daemon.wait_ready(line=b"consumer.started")  # its first long poll is under way
        time.sleep(1.0)
        cpu0, t0 = cpu_seconds(daemon.pid), time.monotonic()
        time.sleep(idle_s)
        cpu_s, elapsed = cpu_seconds(daemon.pid) - cpu0, time.monotonic() - t0
        footprint = {"idle_s": round(elapsed, 1), "cpu_s": round(cpu_s, 3),
                     "cpu_percent": round(cpu_s / elapsed * 100, 3),
                     "torch_mapped": maps_torch(daemon.pid), **memory_mb(daemon.pid)}
    return footprint


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.orchestration")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "out")
    parser.add_argument("--latency", type=float, default=2.0)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32, 64])
    parser.add_argument("--rounds", type=int, default=3,
                        help="messages per daemon slot in each burst")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--noop-concurrency", type=int, nargs="+", default=[4, 16])
    parser.add_argument("--noop-messages", type=int, default=200)
    parser.add_argument("--idle-s", type=float, default=20.0)
    parser.add_argument("--quick", action="store_true", help="a tiny run (smoke test)")
    args = parser.parse_args(argv)
    if args.quick:
        args.concurrency, args.latency, args.rounds, args.repeat = [2], 0.2, 2, 1
        args.noop_concurrency, args.noop_messages, args.idle_s = [2], 4, 1.0

    began = time.monotonic()

    def log(line: str) -> None:
        print(f"[{time.monotonic() - began:6.1f} s] {line}", file=sys.stderr, flush=True)

    with tempfile.TemporaryDirectory(prefix="bench-orch-") as tmp:
        started = time.monotonic()
        report = {
            "latency_s": args.latency, "rounds": args.rounds, "repeats": args.repeat,
            "cpus": os.cpu_count(),
            "scaling": scaling(Path(tmp), concurrencies=args.concurrency,
                               latency_s=args.latency, rounds=args.rounds, repeats=args.repeat,
                               log=log),
            **noop_and_footprint(Path(tmp), concurrencies=args.noop_concurrency,
                                 messages=args.noop_messages, repeats=args.repeat,
                                 idle_s=args.idle_s, log=log),
        }
        report["bench_s"] = round(time.monotonic() - started, 1)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "orchestration.json").write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
