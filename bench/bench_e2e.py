"""End to end on the local cloud: N distinct course-like clips from upload to result file.

Each run is `local demo` itself (the real daemon process, moto server, the Lambda endpoint with
warm workers running the real function): wall time from the first upload to the last result file,
throughput, per-video latency percentiles and correctness against the course records.

    .venv/bin/python -m bench.bench_e2e [--count 100] [--concurrency 1 2] [--out bench/out]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

from bench.variants import make_variants
from localcloud.demo import run_local_demo

REPO = Path(__file__).resolve().parents[1]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def run_once(videos: Path, expected: Path, data: Path, concurrency: int) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="bench-e2e-") as tmp:
        report = run_local_demo(videos=videos, gallery=data / "encoding",
                                students=data / "student_data.json", results=Path(tmp) / "r",
                                expected=expected, function_concurrency=concurrency,
                                daemon_concurrency=concurrency, out=io.StringIO())
    latencies = [r.elapsed_s for r in report.runs if r.elapsed_s is not None]
    correct = sum(bool(r.correct) for r in report.runs)
    return {
        "concurrency": concurrency, "videos": len(report.runs), "correct": correct,
        "complete": report.complete, "daemon_exit": report.daemon_exit,
        "wall_s": round(report.wall_s, 2),
        "throughput_per_s": round(len(report.runs) / report.wall_s, 2),
        "latency_p50_s": round(statistics.median(latencies), 2),
        "latency_p90_s": round(percentile(latencies, 90), 2),
        "latency_max_s": round(max(latencies), 2),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench_e2e")
    parser.add_argument("--data", type=Path, default=Path(os.environ.get(
        "SHARED_DATA", REPO.parent / "shared" / "data")) / "cse546-2023")
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--cache", type=Path, default=REPO / ".cache" / "bench" / "variants")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "out")
    args = parser.parse_args(argv)

    variants = make_variants(args.data, args.cache, args.count)
    videos = args.cache.parent / f"set-{args.count}"
    videos.mkdir(parents=True, exist_ok=True)
    for stale in videos.iterdir():
        stale.unlink()
    for variant in variants:  # the run uploads exactly this set
        (videos / variant.path.name).symlink_to(variant.path)
    expected = args.cache.parent / f"expected-{args.count}.csv"
    expected.write_text("video,names\n" + "".join(
        f"{v.path.name},{v.expected_name}\n" for v in variants))

    runs = [run_once(videos, expected, args.data, c) for c in args.concurrency]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "e2e.json").write_text(json.dumps(runs, indent=2) + "\n")
    print(json.dumps(runs, indent=2))
    return 0 if all(r["complete"] and r["correct"] == r["videos"] for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
