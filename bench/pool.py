"""The private pool under a burst: how fast it grows, how much of the work it takes, how fast it
drains back.

The OpenStack container (Heat, Nova's fake driver; root, the roots `make roots` built), the local
cloud with the synthetic 1 s function (its own Lambda standing for AWS, 4 slots), the real daemon
with the targets ``private`` (the pool, 2 slots per server) and ``aws`` (``burst_after_s`` 1),
the real controller, and the guests stood in for (bench/pool_harness.py). Two runs, each a burst
of 300 messages at once:

- *autoscaled*: an empty pool, ``min_vms`` 0, ``max_vms`` 4: backlog, desired and serving
  servers and the share on aws over time (sampled every 0.5 s; ``pool.png``), the time from the
  first message to the first invocation on a new server, and from the last result to the pool
  back at ``min_vms``;
- *fixed*: a pool of 1 (``min_vms`` = ``max_vms`` = 1, its server up before the burst).

For both, the fraction of the work done privately.

    sudo .venv/bin/python -m bench.pool [--out bench/out] [--messages 300]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.pool_harness import (
    GuestStandIn,
    autoscaler,
    daemon_pool_settings,
    decisions,
    pool_stack,
    process_env,
    wait_until,
)
from bench.procs import run_daemon
from bench.synthetic_cloud import send_video_events, synthetic_cloud
from localcloud.cloud import LocalCloud
from localcloud.machines import openstack as container
from openstack_handler.private_cloud.cloud_status import connect
from openstack_handler.private_cloud.pool import HeatPool, serving_servers

REPO = Path(__file__).resolve().parents[1]
LATENCY_S, SLOTS_PER_SERVER, AWS_SLOTS, INTERVAL_S = 1.0, 2, 4, 2.0


def _results(daemon: Any) -> int:
    results = daemon.config.parent / "results"
    return len(os.listdir(results)) if results.is_dir() else 0


def one_run(*, label: str, cloud: LocalCloud, info: Any, image_id: str, work: Path,
            messages: int, min_vms: int, max_vms: int, log: Any) -> dict[str, Any]:
    """One burst against a fresh pool stack; returns the run's figures and samples."""
    work.mkdir(parents=True)
    heat = connect(info.heat_cloud_name, api_timeout_s=60)
    tenant = connect(info.cloud_name, api_timeout_s=60)
    sqs = cloud.session().client("sqs")
    function = cloud.resources.function_name
    with pool_stack(heat, image_id=image_id, count=min_vms) as name:
        guests = GuestStandIn(cloud=cloud, cloud_name=info.cloud_name, pool_name=name,
                              slots=SLOTS_PER_SERVER, work_dir=work).start()
        pool = HeatPool(heat, name)
        settings = {"cloud_name": info.heat_cloud_name, "stack_name": name,
                    "interval_s": INTERVAL_S, "min_vms": min_vms, "max_vms": max_vms,
                    "acceptable_wait_s": 10.0, "assumed_s_per_message": LATENCY_S / 2,
                    "max_step_out": max_vms, "scale_in_cooldown_s": 4.0, "boot_timeout_s": 60.0}
        env = process_env(cloud, info.clouds_yaml, work)
        try:
            with run_daemon(cloud, work / "daemon", concurrency=0, env_overrides=env,
                            settings=daemon_pool_settings(
                                stack_name=name, cloud_name=info.cloud_name,
                                aws_url=cloud.lambda_url, slots=SLOTS_PER_SERVER,
                                aws_slots=AWS_SLOTS, max_servers=max(1, max_vms))) as daemon, \
                    autoscaler(cloud, clouds_yaml=info.clouds_yaml, settings=settings,
                               work=work) as (_, log_path):
                daemon.wait_ready()
                if min_vms:
                    wait_until(lambda: len(serving_servers(tenant, name, stale_after_s=5))
                               >= min_vms, timeout_s=90, what=f"{min_vms} serving server(s)")
                aws_before = int(cloud.function_stats(function).get("invocations", 0))
                pool_before = guests.runs()
                at_start = set(guests.runs_by_guest())  # the fixed pool's server, already up
                keys = [f"{label}-{i:04d}.mp4" for i in range(messages)]
                started = time.monotonic()
                send_video_events(cloud, keys)
                samples: list[dict[str, Any]] = []
                first_new_invocation: float | None = None
                finished: float | None = None
                back_at_min: float | None = None
                deadline = started + 600
                while time.monotonic() < deadline:
                    now = time.monotonic() - started
                    attributes = sqs.get_queue_attributes(
                        QueueUrl=cloud.provisioned.input_queue_url,
                        AttributeNames=["ApproximateNumberOfMessages",
                                        "ApproximateNumberOfMessagesNotVisible"])["Attributes"]
                    on_aws = int(cloud.function_stats(function).get("invocations", 0)) - \
                        aws_before
                    on_pool = guests.runs() - pool_before
                    state = pool.read()
                    moment = datetime.now(UTC)
                    sample = {"t": round(now, 2),
                              "backlog": int(attributes["ApproximateNumberOfMessages"])
                              + int(attributes["ApproximateNumberOfMessagesNotVisible"]),
                              "desired": state.count,
                              "serving": sum(s.serving(stale_after_s=5, now=moment)
                                             for s in state.servers),
                              "on_aws": on_aws, "on_pool": on_pool}
                    samples.append(sample)
                    if first_new_invocation is None and any(
                            runs and server_id not in at_start
                            for server_id, runs in guests.runs_by_guest().items()):
                        first_new_invocation = now
                    if finished is None and _results(daemon) >= messages:
                        finished = now
                        log(f"{label}: {messages} results at {now:.1f} s")
                    if finished is not None and state.count == min_vms and \
                            len(guests.guests) == min_vms and state.settled:
                        back_at_min = now
                        break
                    time.sleep(0.5)
                made = decisions(log_path)
        finally:
            guests.stop()
    last = samples[-1]
    total = last["on_aws"] + last["on_pool"]
    return {"label": label, "messages": messages, "min_vms": min_vms, "max_vms": max_vms,
            "worked_off_s": finished, "drained_back_s": (back_at_min - finished)
            if back_at_min is not None and finished is not None else None,
            "first_new_server_invocation_s": first_new_invocation,
            "on_pool": last["on_pool"], "on_aws": last["on_aws"],
            "private_fraction": round(last["on_pool"] / total, 3) if total else None,
            "max_desired": max(s["desired"] for s in samples),
            "decisions": len(made), "samples": samples}


def plot(report: dict[str, Any], out: Path) -> str:
    """Backlog, desired and serving servers, and aws's share of the work done, over time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    share_axis = axes[1].twinx()
    for run, style in zip(report["runs"], ("-", "--"), strict=False):
        t = [s["t"] for s in run["samples"]]
        axes[0].plot(t, [s["backlog"] for s in run["samples"]], style,
                     label=f"backlog ({run['label']})")
        axes[1].plot(t, [s["desired"] for s in run["samples"]], style,
                     label=f"desired VMs ({run['label']})")
        axes[1].plot(t, [s["serving"] for s in run["samples"]], style,
                     label=f"serving VMs ({run['label']})")
        share_axis.plot(t, [s["on_aws"] / (s["on_aws"] + s["on_pool"])
                            if s["on_aws"] + s["on_pool"] else 0 for s in run["samples"]],
                        style, color="grey", alpha=0.6)
    share_axis.set_ylabel("share of the work on aws (grey)")
    share_axis.set_ylim(0, 1)
    axes[0].set_ylabel("messages")
    axes[0].legend(fontsize=8)
    axes[1].set_ylabel("servers")
    axes[1].set_xlabel("seconds since the burst")
    axes[1].legend(fontsize=8, loc="upper right")
    fig.suptitle(f"{report['runs'][0]['messages']} messages: the autoscaled pool vs a pool of 1")
    fig.tight_layout()
    fig.savefig(out / "pool.png", dpi=110)
    return "pool.png"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.pool")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "out")
    parser.add_argument("--messages", type=int, default=300)
    args = parser.parse_args(argv)
    began = time.monotonic()

    def log(line: str) -> None:
        print(f"[{time.monotonic() - began:6.1f} s] {line}", file=sys.stderr, flush=True)

    with tempfile.TemporaryDirectory(prefix="bench-pool-") as tmp:
        work = Path(tmp)
        info = container.up(work / "clouds.yaml", cloud_name="bench", build=False,
                            owner_pid=os.getpid())
        try:
            os.environ["OS_CLIENT_CONFIG_FILE"] = info.clouds_yaml
            with synthetic_cloud(work, prefix="bpool", slots=AWS_SLOTS,
                                 latency_s=LATENCY_S) as cloud:
                heat = connect(info.heat_cloud_name, api_timeout_s=60)
                image = heat.image.create_image(name="bench-pool-image", data=b"\0" * 1024,
                                                disk_format="raw", container_format="bare",
                                                allow_duplicates=True)
                runs = [one_run(label="autoscaled", cloud=cloud, info=info, image_id=image.id,
                                work=work / "autoscaled", messages=args.messages, min_vms=0,
                                max_vms=4, log=log),
                        one_run(label="fixed-1", cloud=cloud, info=info, image_id=image.id,
                                work=work / "fixed", messages=args.messages, min_vms=1,
                                max_vms=1, log=log)]
        finally:
            container.down()
    for run in runs:
        for key in ("worked_off_s", "drained_back_s", "first_new_server_invocation_s"):
            if run[key] is not None:
                run[key] = round(run[key], 1)
    report = {"runs": runs, "function_s": LATENCY_S, "slots_per_server": SLOTS_PER_SERVER,
              "aws_slots": AWS_SLOTS, "interval_s": INTERVAL_S, "cpus": os.cpu_count(),
              "bench_s": round(time.monotonic() - began, 1)}
    args.out.mkdir(parents=True, exist_ok=True)
    report["plot"] = plot(report, args.out)
    (args.out / "pool.json").write_text(json.dumps(report, indent=1) + "\n")
    for run in runs:
        log(f"{run['label']}: worked off in {run['worked_off_s']} s, private "
            f"{run['private_fraction']}, first new server's invocation at "
            f"{run['first_new_server_invocation_s']} s, back to min {run['drained_back_s']} s "
            "after the last result")
    return 0


if __name__ == "__main__":
    sys.exit(main())
