"""Orchestration alone: the real daemon against a synthetic function of known latency.

* Scaling: a function that takes exactly ``latency`` seconds (2 s, like a warm course Lambda),
  function workers ≥ daemon concurrency; for each concurrency N, ``rounds × N`` S3-event messages
  are put straight on the input queue (no uploads) and the clock runs from the first send until
  the last ``results/<key>.csv`` exists. Achieved throughput is compared with the ideal N ÷ latency.
* No-op: the same with a function that answers at once: messages per second through the whole
  daemon path (receive, invoke, delete, drain, write the file) and the daemon's CPU per message
  (utime + stime from /proc/<pid>/stat over the run); also with two daemon processes on the same
  queues, as two handler VMs would run (one Python process cannot use more than one core).
* Footprint: the daemon's RSS, whether torch is mapped into it, and its CPU while idle with the
  default 20 s long poll.

Both sweeps run twice: with the queues on the local cloud's moto server, and on the lean SQS of
`bench/lean_sqs.py`. On 2 cores moto's own CPU per message exceeds the daemon's, so the first
measures the daemon *and* moto; the second measures the daemon (the function stand-in and the
endpoint are the same in both).

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
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.lean_sqs import LeanSQSProcess
from bench.procs import DaemonProc, cpu_seconds, maps_torch, memory_mb, run_daemon
from localcloud.cloud import EndpointSession, LocalCloud
from openstack_handler.provisioning.spec import ResourceSpec

REPO = Path(__file__).resolve().parents[1]
POLL_S = 0.02
SQS_SITES = ("moto", "lean_sqs")


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


@dataclass(frozen=True)
class QueueSite:
    """Where one run's input and output queues live, and the process serving them."""

    name: str  #: "moto" (the local cloud's) or "lean_sqs" (bench/lean_sqs.py)
    endpoint: str
    input_url: str
    output_url: str
    pid: int | None

    def daemon_env(self) -> dict[str, str]:
        """Environment that points the daemon at these queues (moto's are in its config)."""
        if self.name == "moto":
            return {}
        # The config names moto as every service's endpoint; SQS's own setting overrides it.
        return {"OPENSTACK_HANDLER_SQS_ENDPOINT_URL": self.endpoint,
                "OPENSTACK_HANDLER_INPUT_QUEUE_URL": self.input_url,
                "OPENSTACK_HANDLER_OUTPUT_QUEUE_URL": self.output_url}


@contextmanager
def synthetic_cloud(work: Path, *, handler: str, workers: int, latency_s: float = 2.0,
                    sqs: str = "moto") -> Iterator[tuple[LocalCloud, QueueSite]]:
    """A LocalCloud whose function is `bench.synthetic:<handler>` with *workers* warm workers,
    and the queues the daemon and the function use: moto's, or a lean SQS's (*sqs*)."""
    work.mkdir(parents=True, exist_ok=True)
    gallery = work / "gallery.unused"  # the synthetic function reads no gallery
    gallery.write_bytes(b"")
    resources = ResourceSpec(prefix="bench-orch", function_timeout_s=30)
    environment = {"SYNTHETIC_LATENCY_S": str(latency_s)}
    with ExitStack() as stack:
        lean = stack.enter_context(LeanSQSProcess()) if sqs == "lean_sqs" else None
        if lean is not None:
            client = EndpointSession(lean.url).client("sqs")
            visibility = {"VisibilityTimeout": str(resources.visibility_timeout_s)}
            lean_input, lean_output = (
                client.create_queue(QueueName=f"lean-{name}", Attributes=visibility)["QueueUrl"]
                for name in ("input", "output"))
            environment |= {"AWS_ENDPOINT_URL_SQS": lean.url, "OUTPUT_QUEUE_URL": lean_output}
        cloud = stack.enter_context(LocalCloud(
            gallery=gallery, handler=f"bench.synthetic:{handler}", resources=resources,
            concurrency=workers, work_dir=work / "cloud", extra_environment=environment))
        if lean is not None:
            site = QueueSite("lean_sqs", lean.url, lean_input, lean_output, lean.pid)
        else:
            site = QueueSite("moto", cloud.moto_url, cloud.provisioned.input_queue_url,
                             cloud.provisioned.output_queue_url,
                             cloud.moto.pid if cloud.moto else None)
        yield cloud, site


def event_body(bucket: str, key: str) -> str:
    etag = hashlib.md5(key.encode()).hexdigest()
    return json.dumps({"Records": [{
        "eventVersion": "2.1", "eventSource": "aws:s3", "eventName": "ObjectCreated:Put",
        "s3": {"bucket": {"name": bucket}, "object": {"key": key, "eTag": etag, "size": 1024}}}]})


def measure(cloud: LocalCloud, site: QueueSite, daemons: DaemonProc | Sequence[DaemonProc], *,
            prefix: str, messages: int, timeout_s: float = 300.0) -> dict[str, Any]:
    """Send *messages* events for keys `<prefix>-NNNN.mp4`, wait for every result file (in any
    of the *daemons*' results dirs: replicas share one, separate handler VMs would not)."""
    daemons = [daemons] if isinstance(daemons, DaemonProc) else list(daemons)
    sqs = EndpointSession(site.endpoint).client("sqs")
    bucket = cloud.provisioned.input_bucket
    results_dirs = sorted({daemon.config.parent / "results" for daemon in daemons})
    keys = [f"{prefix}-{i:04d}.mp4" for i in range(messages)]
    wanted = {k[:-4] + ".csv" for k in keys}
    sent_at: dict[str, float] = {}
    others = {site.name: site.pid, "lambda_endpoint": getattr(cloud.endpoint, "pid", None)}
    others = {name: pid for name, pid in others.items() if pid}
    others0 = {name: cpu_seconds(pid) for name, pid in others.items()}
    cpu0 = sum(cpu_seconds(daemon.pid) for daemon in daemons)
    started = time.monotonic()
    for first in range(0, messages, 10):
        chunk = keys[first:first + 10]
        now = time.time()
        sqs.send_message_batch(QueueUrl=site.input_url, Entries=[
            {"Id": str(i), "MessageBody": event_body(bucket, k)}
            for i, k in enumerate(chunk)])
        sent_at.update((k[:-4] + ".csv", now) for k in chunk)
    deadline = started + timeout_s
    done: dict[str, Path] = {}
    while time.monotonic() < deadline and all(d.proc.poll() is None for d in daemons):
        for results in results_dirs:
            if results.is_dir():
                done.update((name, results) for name in wanted.intersection(os.listdir(results)))
        if len(done) == len(wanted):
            break
        time.sleep(POLL_S)
    wall_s = time.monotonic() - started
    cpu_s = sum(cpu_seconds(daemon.pid) for daemon in daemons) - cpu0
    other_ms = {f"{name}_cpu_ms_per_message": round((cpu_seconds(pid) - others0[name])
                                                     / messages * 1000, 3)
                for name, pid in others.items()}
    if len(done) != len(wanted):
        raise RuntimeError(f"{len(done)}/{messages} results after {wall_s:.1f} s; daemon log "
                           f"tails:\n" + "\n".join(daemon.tail() for daemon in daemons))
    latencies = [(done[name] / name).stat().st_mtime - sent_at[name] for name in wanted]
    memory = [memory_mb(daemon.pid) for daemon in daemons]
    return {"messages": messages, "wall_s": round(wall_s, 3),
            "throughput_per_s": round(messages / wall_s, 2),
            "daemon_cpu_s": round(cpu_s, 3),
            "daemon_cpu_ms_per_message": round(cpu_s / messages * 1000, 3), **other_ms,
            "latency_p50_s": round(statistics.median(latencies), 3),
            "latency_p90_s": round(percentile(latencies, 90), 3),
            "latency_max_s": round(max(latencies), 3),
            "rss_mb": max(m["rss_mb"] for m in memory),
            "peak_rss_mb": max(m["peak_rss_mb"] for m in memory)}


def summarize(concurrency: int, runs: list[dict[str, Any]], ideal: float | None,
              daemons: int = 1) -> dict[str, Any]:
    med = {k: round(statistics.median(r[k] for r in runs), 3)
           for k in ("wall_s", "throughput_per_s", "daemon_cpu_ms_per_message", "latency_p50_s",
                     "moto_cpu_ms_per_message", "lean_sqs_cpu_ms_per_message",
                     "lambda_endpoint_cpu_ms_per_message")
           if k in runs[0]}
    row: dict[str, Any] = {"concurrency": concurrency, "daemons": daemons, "repeats": len(runs),
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
            repeats: int, sqs: str = "moto", log=print) -> list[dict[str, Any]]:
    """The fixed-latency sweep; one daemon per concurrency, *repeats* bursts each."""
    rows = []
    work = work / f"scaling-{sqs}"
    with synthetic_cloud(work, handler="fixed_latency", workers=max(concurrencies),
                         latency_s=latency_s, sqs=sqs) as (cloud, site):
        for c in concurrencies:
            log(f"starting the daemon, concurrency {c}, queues on {sqs}")
            with run_daemon(cloud, work / f"c{c}", concurrency=c,
                            env_overrides=site.daemon_env()) as daemon:
                daemon.wait_ready()
                runs = [measure(cloud, site, daemon, prefix=f"c{c}-r{r}", messages=rounds * c)
                        for r in range(repeats)]
            row = summarize(c, runs, ideal=c / latency_s)
            log(f"{sqs}: latency {latency_s} s, concurrency {c}: {row['throughput_per_s']} msg/s "
                f"= {row['efficiency']:.1%} of ideal {row['ideal_per_s']}")
            rows.append(row)
    return rows


def noop(work: Path, *, configs: Sequence[tuple[int, int]], messages: int, repeats: int,
         sqs: str = "moto", idle_s: float | None = None, log=print) -> dict[str, Any]:
    """No-op throughput for each (daemon processes, concurrency of each) in *configs*; then, given
    *idle_s*, the idle daemon's CPU and memory. Several daemons are replicas, as the handler
    role deploys them on one VM (handler@1..N): one state DB and one results dir."""
    rows = []
    work = work / f"noop-{sqs}"
    with synthetic_cloud(work, handler="noop", workers=max(d * c for d, c in configs),
                         sqs=sqs) as (cloud, site):
        for count, c in configs:
            with ExitStack() as stack:
                daemons = [stack.enter_context(run_daemon(
                    cloud, work / f"d{count}x{c}", concurrency=c, env_overrides=site.daemon_env(),
                    replica=str(i + 1) if count > 1 else "")) for i in range(count)]
                for daemon in daemons:
                    daemon.wait_ready()
                measure(cloud, site, daemons, prefix=f"warm{count}x{c}",
                        messages=2 * count * c)  # connections
                runs = [measure(cloud, site, daemons, prefix=f"n{count}x{c}-r{r}",
                                messages=messages) for r in range(repeats)]
            row = summarize(c, runs, ideal=None, daemons=count)
            log(f"{sqs}: no-op, {count} daemon(s) × concurrency {c}: "
                f"{row['throughput_per_s']} msg/s, {row['daemon_cpu_ms_per_message']} ms daemon "
                "CPU per message")
            rows.append(row)
        if idle_s is None:
            return {"noop": rows}
        idle = idle_footprint(cloud, site, work / "idle", idle_s=idle_s)
        log(f"idle: {idle['cpu_percent']} % CPU over {idle_s} s, RSS {idle['rss_mb']} MB")
    return {"noop": rows, "idle": idle}


def noop_config(text: str) -> tuple[int, int]:
    """``"16"`` → one daemon at concurrency 16; ``"2x16"`` → two daemons at 16 each."""
    count, _, concurrency = text.rpartition("x")
    return int(count or 1), int(concurrency)


def idle_footprint(cloud: LocalCloud, site: QueueSite, work: Path, *,
                   idle_s: float) -> dict[str, Any]:
    """The daemon with the default long poll (20 s) and empty queues."""
    with run_daemon(cloud, work, concurrency=4, wait_time_s=None, hard_stop=True,
                    env_overrides=site.daemon_env()) as daemon:
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
    parser.add_argument("--noop", type=noop_config, nargs="+",
                        default=[(1, 4), (1, 16), (1, 32), (2, 16)], metavar="[DAEMONSx]N",
                        help="no-op runs: concurrency N, or DAEMONS processes at N each")
    parser.add_argument("--noop-messages", type=int, default=500)
    parser.add_argument("--idle-s", type=float, default=20.0)
    parser.add_argument("--sqs", nargs="+", choices=SQS_SITES, default=list(SQS_SITES),
                        help="where the queues live (the first one also gets the idle run)")
    parser.add_argument("--quick", action="store_true", help="a tiny run (smoke test)")
    args = parser.parse_args(argv)
    if args.quick:
        # 100 no-op messages: CPU time is read in clock ticks (10 ms), and the lean SQS spends
        # about 1 ms per message, so fewer could read as 0 (4 did, on a fresh machine).
        args.concurrency, args.latency, args.rounds, args.repeat = [2], 0.2, 2, 1
        args.noop, args.noop_messages, args.idle_s = [(1, 2)], 100, 1.0

    began = time.monotonic()

    def log(line: str) -> None:
        print(f"[{time.monotonic() - began:6.1f} s] {line}", file=sys.stderr, flush=True)

    with tempfile.TemporaryDirectory(prefix="bench-orch-") as tmp:
        started = time.monotonic()
        report: dict[str, Any] = {"latency_s": args.latency, "rounds": args.rounds,
                                  "repeats": args.repeat, "cpus": os.cpu_count(), "sites": {}}
        for index, sqs in enumerate(args.sqs):
            site = {"scaling": scaling(Path(tmp), concurrencies=args.concurrency,
                                       latency_s=args.latency, rounds=args.rounds,
                                       repeats=args.repeat, sqs=sqs, log=log),
                    **noop(Path(tmp), configs=args.noop,
                           messages=args.noop_messages, repeats=args.repeat, sqs=sqs,
                           idle_s=args.idle_s if index == 0 else None, log=log)}
            if "idle" in site:
                report["idle"] = site.pop("idle")
            report["sites"][sqs] = site
        report["bench_s"] = round(time.monotonic() - started, 1)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "orchestration.json").write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
