"""The web tier under load: requests per second and latency at 1, 10 and 100 concurrent clients
on the course's frames, with the private target alone and with bursting, and the time per stage.

The local cloud's camera-frame function (the real frame_handler, the course gallery, two warm
workers: this machine's two cores) behind the real web tier process. Two placements, both on
that Lambda service so that the comparison is of the placement alone:

- *private alone*: one target, ``private``, 1 slot (a pool of one server of one slot);
- *bursting*: ``private`` 1 slot, then ``aws`` 1 slot past ``burst_after_s`` 0 — a full private
  target spills at once, and the second worker's core is the capacity Lambda would add.

Each client posts frames one after another (closed loop), the answers asked as JSON for their
stage times (upload to S3, waiting for a slot, recognition, storing the answer); every answer
is checked against the clip's person. Output: ``web.json`` and a table (``web.md``).

    .venv/bin/python -m bench.web --data ../shared/data/cse546-2023 [--out bench/out]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bench.web_harness import course_frames, post_file, web_tier, write_configs
from localcloud.cloud import LocalCloud
from openstack_handler.provisioning.spec import ResourceSpec

CLIENTS = (1, 10, 100)
STAGES = ("upload", "placement", "recognition", "store")


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _load(url: str, frames: list[tuple[str, bytes, str]], clients: int, requests: int
          ) -> dict[str, Any]:
    """*requests* frames posted by *clients* closed-loop clients."""
    work = [frames[i % len(frames)] for i in range(requests)]

    def one(frame: tuple[str, bytes, str]) -> tuple[float, int, dict[str, Any] | None, bool]:
        started = time.perf_counter()
        answer = post_file(url, frame[0], frame[1], accept="application/json")
        latency = (time.perf_counter() - started) * 1000
        doc = answer.json() if answer.status == 200 else None
        return latency, answer.status, doc, doc is not None and doc["result"] == frame[2]

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(one, work))
    wall = time.perf_counter() - started
    latencies = [r[0] for r in results]
    docs = [r[2] for r in results if r[2] is not None]
    return {"clients": clients, "requests": requests, "wall_s": round(wall, 2),
            "rps": round(requests / wall, 2),
            "latency_ms": {"p50": round(_percentile(latencies, 0.5), 1),
                           "p95": round(_percentile(latencies, 0.95), 1),
                           "max": round(max(latencies), 1)},
            "statuses": dict(Counter(r[1] for r in results)),
            "wrong": sum(1 for r in results if r[1] == 200 and not r[3]),
            "targets": dict(Counter(d["target"] for d in docs)),
            "stage_ms": {s: round(statistics.median(d["timings_ms"][s] for d in docs), 1)
                         for s in STAGES} if docs else {}}


def run(data: Path, work: Path, requests_per_client: int) -> dict[str, Any]:
    frames = course_frames(data, 100)
    placements = {
        "private alone": {"targets": [{"name": "private", "slots": 1}]},
        "bursting": {"targets": [{"name": "private", "slots": 1}, {"name": "aws", "slots": 1}],
                     "burst_after_s": 0.0}}
    report: dict[str, Any] = {"frames": len(frames), "runs": {}}
    with LocalCloud(gallery=data / "encoding", students=data / "student_data.json",
                    resources=ResourceSpec(prefix="webbench", url_auth_type="NONE"),
                    video=False, camera=True, camera_concurrency=2,
                    work_dir=work / "cloud") as cloud:
        for label, extra in placements.items():
            targets = [{**t, "endpoint_url": cloud.lambda_url} if t["name"] == "private" else t
                       for t in extra["targets"]]
            config = write_configs(cloud, work / label.replace(" ", "-"),
                                   daemon_extra={**extra, "targets": targets})
            with web_tier(cloud, config) as web:
                _load(web.url, frames, 10, 40)  # warm: workers, sockets, the tier's pools
                rows = []
                for clients in CLIENTS:
                    requests = max(30, clients * requests_per_client)
                    row = _load(web.url, frames, clients, requests)
                    rows.append(row)
                    print(f"{label:14} {clients:3} clients: {row['rps']:6.1f} rps, p50 "
                          f"{row['latency_ms']['p50']:7.1f} p95 {row['latency_ms']['p95']:7.1f} "
                          f"max {row['latency_ms']['max']:7.1f} ms, {row['statuses']}, "
                          f"{row['targets']}", file=sys.stderr)
                report["runs"][label] = rows
    return report


def render(report: dict[str, Any]) -> str:
    lines = [("| placement | clients | requests | rps | p50 ms | p95 ms | max ms | answers | "
              "ran on | upload | wait for slot | recognition | store |"),
             "|---|---:|---:|---:|---:|---:|---:|---|---|---:|---:|---:|---:|"]
    for label, rows in report["runs"].items():
        for r in rows:
            ok = r["statuses"].get(200, 0)
            stage = r["stage_ms"]
            lines.append(
                f"| {label} | {r['clients']} | {r['requests']} | {r['rps']} | "
                f"{r['latency_ms']['p50']} | {r['latency_ms']['p95']} | {r['latency_ms']['max']} "
                f"| {ok} ok, {r['wrong']} wrong | "
                + ", ".join(f"{k} {v}" for k, v in sorted(r["targets"].items()))
                + " | " + " | ".join(str(stage.get(s, "")) for s in STAGES) + " |")
    alone = {r["clients"]: r["rps"] for r in report["runs"]["private alone"]}
    burst = {r["clients"]: r["rps"] for r in report["runs"]["bursting"]}
    lines.append("")
    lines.append("Bursting ÷ private alone, requests per second: " + ", ".join(
        f"{c} clients ×{burst[c] / alone[c]:.2f}" for c in CLIENTS))
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=Path("bench/out"))
    parser.add_argument("--requests-per-client", type=int, default=2)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bench-web-") as tmp:
        report = run(args.data, Path(tmp), args.requests_per_client)
    (args.out / "web.json").write_text(json.dumps(report, indent=2))
    text = render(report)
    (args.out / "web.md").write_text(text)
    print(text)
    failed = sum(r["wrong"] + sum(n for s, n in r["statuses"].items() if s != 200)
                 for rows in report["runs"].values() for r in rows)
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
