"""A/B the recognition function's warm time between two checkouts, interleaved in one session.

Two warm worker processes, one per checkout (its own `lambda_image` first on sys.path), run the
real `s3_handler` against one moto server this script starts (S3 object in, CSV + SQS message
out, one torch thread each), one call at a time: for every round and clip, A then B or B then A
(alternating), so that the machine's drift and the other jobs on it fall on both alike. Reports
per clip the median wall time of each side, their ratio and the median of the ratios of calls made
back to back, the same for all calls, and what each side answered (person, extra frames sampled).

    git archive BASE_COMMIT | tar -x -C /tmp/base
    .venv/bin/python -m bench.ab_function --base /tmp/base [--new .] [--rounds 15] \\
        [--variants 100] --out bench/out/ab_function.json

`--variants N` also runs bench/variants.py's first N variants once per side (interleaved the same
way) and counts the videos that needed extra frames.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

#: The worker: the checkout's own handler, warm, one S3 key per stdin line, one JSON line back.
WORKER = r"""
import json, sys, time
sys.path.insert(0, sys.argv[1])
import structlog
structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
from lambda_image import handlers
handlers.runtime()
assert handlers.__file__.startswith(sys.argv[1]), handlers.__file__
print(json.dumps({"ready": handlers.__file__}), flush=True)
for line in sys.stdin:
    key = line.strip()
    event = {"Records": [{"eventName": "ObjectCreated:Put",
                          "s3": {"bucket": {"name": "bench-in"}, "object": {"key": key}}}]}
    started = time.perf_counter()
    (result,) = handlers.s3_handler(event, None)["results"]
    wall = (time.perf_counter() - started) * 1000
    print(json.dumps({"key": key, "wall": wall, "total": result["timings_ms"]["total"],
                      "person": (result["people"] or [{"name": ""}])[0]["name"],
                      "names": [p["name"] for p in result["people"]],
                      "frames_sampled": result["frames_sampled"],
                      "extra_frames": result.get("extra_frames", 0)}), flush=True)
"""


class Worker:
    def __init__(self, label: str, checkout: Path, env: dict[str, str]) -> None:
        self.label = label
        self.proc = subprocess.Popen([sys.executable, "-c", WORKER, str(checkout.resolve())],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                     env=env, cwd=str(checkout))
        ready = json.loads(self._line())
        self.module = ready["ready"]

    def _line(self) -> str:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"worker {self.label} exited with {self.proc.wait()}")
        return line

    def call(self, key: str) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(key + "\n")
        self.proc.stdin.flush()
        return json.loads(self._line())

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


def interleaved(workers: tuple[Worker, Worker], keys: list[str], rounds: int,
                start: int = 0) -> dict[str, list[dict[str, Any]]]:
    """Every key `rounds` times on both workers, the order flipping with each call."""
    runs: dict[str, list[dict[str, Any]]] = {w.label: [] for w in workers}
    turn = start
    for _ in range(rounds):
        for key in keys:
            pair = workers if turn % 2 == 0 else workers[::-1]
            turn += 1
            for worker in pair:
                runs[worker.label].append(worker.call(key))
    return runs


def medians(runs: list[dict[str, Any]], field: str = "wall") -> dict[str, float]:
    keys = sorted({r["key"] for r in runs})
    return {k: statistics.median(r[field] for r in runs if r["key"] == k) for k in keys}


def paired_ratios(base: list[dict[str, Any]], new: list[dict[str, Any]]) -> dict[str, float]:
    """Per key, the median of new/base over the calls made back to back (the i-th of each side is
    one pair): steadier than a ratio of medians when the machine's load drifts."""
    ratios: dict[str, list[float]] = {}
    for a, b in zip(base, new, strict=True):
        assert a["key"] == b["key"]
        ratios.setdefault(a["key"], []).append(b["wall"] / a["wall"])
    return {k: statistics.median(v) for k, v in ratios.items()}


def main() -> int:
    parser = argparse.ArgumentParser(prog="bench.ab_function")
    parser.add_argument("--base", type=Path, required=True, help="checkout A (the baseline)")
    parser.add_argument("--new", type=Path, default=REPO, help="checkout B (default: this one)")
    parser.add_argument("--data", type=Path,
                        default=Path(os.environ.get("SHARED_DATA", REPO.parent / "shared" / "data"))
                        / "cse546-2023")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--variants", type=int, default=0)
    parser.add_argument("--cache", type=Path, default=REPO / ".cache" / "bench" / "variants")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "out" / "ab_function.json")
    args = parser.parse_args()

    import boto3

    from bench.bench_function import provision
    from bench.variants import make_variants
    from localcloud.moto_server import MotoServer

    with tempfile.TemporaryDirectory() as tmp, MotoServer(log_path=Path(tmp) / "moto.log") as moto:
        env = {**os.environ, "AWS_ENDPOINT_URL": moto.url, "AWS_ACCESS_KEY_ID": "bench",
               "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1",
               "TORCH_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
        os.environ.update({k: env[k] for k in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID",
                                               "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")})
        env.update(provision(args.data))
        clips = sorted(p.name for p in (args.data / "videos").glob("*.mp4"))
        variant_keys: dict[str, str] = {}
        if args.variants:
            s3 = boto3.session.Session(region_name="us-east-1").client("s3")
            for v in make_variants(args.data, args.cache, args.variants):
                key = f"variants/{v.path.name}"
                s3.put_object(Bucket="bench-in", Key=key, Body=v.path.read_bytes())
                variant_keys[key] = v.expected_name
        workers = (Worker("base", args.base, env), Worker("new", args.new, env))
        try:
            interleaved(workers, clips, 1)  # warm-up
            runs = interleaved(workers, clips, args.rounds)
            variant_runs = interleaved(workers, list(variant_keys), 1) if variant_keys else {}
        finally:
            for w in workers:
                w.close()

    base, new = medians(runs["base"]), medians(runs["new"])
    paired = paired_ratios(runs["base"], runs["new"])
    per_clip = {}
    for clip in clips:
        answers = {label: next(r for r in runs[label] if r["key"] == clip) for label in runs}
        per_clip[clip] = {"base_ms": round(base[clip], 1), "new_ms": round(new[clip], 1),
                          "ratio": round(new[clip] / base[clip], 3),
                          "paired_ratio": round(paired[clip], 3),
                          "base_names": answers["base"]["names"],
                          "new_names": answers["new"]["names"],
                          "new_extra_frames": answers["new"]["extra_frames"]}
    overall = {label: statistics.median(r["wall"] for r in runs[label]) for label in runs}
    summary: dict[str, Any] = {
        "base": str(args.base), "new": str(args.new), "rounds": args.rounds,
        "overall_median_ms": {k: round(v, 1) for k, v in overall.items()},
        "overall_ratio": round(overall["new"] / overall["base"], 3),
        "median_of_clip_ratios": round(statistics.median(c["ratio"] for c in per_clip.values()), 3),
        "paired_ratio_all_calls": round(statistics.median(
            b["wall"] / a["wall"] for a, b in zip(runs["base"], runs["new"], strict=True)), 3),
        "course_clips_with_extra_frames": sum(c["new_extra_frames"] > 0 for c in per_clip.values()),
        "per_clip": per_clip,
    }
    if variant_runs:
        summary["variants"] = {
            label: {"videos": len(rs),
                    "right_first": sum(r["person"] == variant_keys[r["key"]] for r in rs),
                    "with_extra_frames": sum(r["extra_frames"] > 0 for r in rs),
                    "median_ms": round(statistics.median(r["wall"] for r in rs), 1)}
            for label, rs in variant_runs.items()}
        summary["variants_ratio"] = round(summary["variants"]["new"]["median_ms"]
                                          / summary["variants"]["base"]["median_ms"], 3)
    text = json.dumps(summary, indent=1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
