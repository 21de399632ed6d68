"""Benchmark the recognition function on the course clips: warm per-stage medians, cold start, RSS,
by clip resolution and by embedder.

Runs the real handler against a moto server it starts itself (S3 object in, CSV + SQS message out),
one torch thread:

* the 8 course clips as they are (dlib embedder, the course `encoding` gallery): per-stage medians;
* the same clips scaled to 854×480, 1280×720 and 1920×1080 (bench/variants.py): per-stage medians
  per resolution;
* the facenet embedder (InceptionResnetV1, 512-d) in a child process with a `data.pt` gallery and
  a RANDOMLY INITIALISED state dict saved to a file (FACENET_WEIGHTS): the vggface2 weights cannot
  be downloaded here, so this times the work only; its names are meaningless;
* cold start (import, model load, first video) in a fresh child process;
* bench/variants.py's 100 variants once each: how many needed extra frames to confirm a
  borderline face (issue 14).

Writes the JSON summary to --out (and prints it on stdout); log lines go to stderr.

    .venv/bin/python bench/bench_function.py [--repeat 5] [--data ../shared/data/cse546-2023]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("TORCH_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

def logs_to_stderr() -> None:
    """structlog prints to stdout by default: keep stdout for the JSON summary alone."""
    import structlog

    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))


STAGES = ("download", "decode", "detect", "embed", "lookup", "write", "total")
RESOLUTIONS = ((854, 480), (1280, 720), (1920, 1080))


def provision(data: Path) -> dict[str, str]:
    """Buckets, queue and the students table on the moto server named by AWS_ENDPOINT_URL."""
    import boto3

    session = boto3.session.Session(region_name="us-east-1")
    s3, sqs, ddb = (session.client(n) for n in ("s3", "sqs", "dynamodb"))
    for bucket in ("bench-in", "bench-out"):
        s3.create_bucket(Bucket=bucket)
    queue = sqs.create_queue(QueueName="bench-results")["QueueUrl"]
    ddb.create_table(TableName="students", BillingMode="PAY_PER_REQUEST",
                     KeySchema=[{"AttributeName": "name", "KeyType": "HASH"}],
                     AttributeDefinitions=[{"AttributeName": "name", "AttributeType": "S"}])
    for rec in json.loads((data / "student_data.json").read_text()):
        ddb.put_item(TableName="students", Item={k: {"S": str(v)} for k, v in rec.items()})
    for clip in sorted((data / "videos").glob("*.mp4")):
        s3.put_object(Bucket="bench-in", Key=clip.name, Body=clip.read_bytes())
    return {"GALLERY_PATH": str(data / "encoding"), "OUTPUT_BUCKET": "bench-out",
            "OUTPUT_QUEUE_URL": queue, "STUDENTS_TABLE": "students"}


def scaled_keys(data: Path, cache: Path) -> dict[str, list[str]]:
    """Upload the course clips scaled to each of RESOLUTIONS; keys `WxH/test_N.mp4` per size."""
    import boto3

    from bench.variants import make_scaled

    s3 = boto3.session.Session(region_name="us-east-1").client("s3")
    keys: dict[str, list[str]] = {}
    for size in RESOLUTIONS:
        label = f"{size[0]}x{size[1]}"
        keys[label] = []
        for variant in make_scaled(data, cache, size):
            key = f"{label}/{variant.path.name}"
            s3.put_object(Bucket="bench-in", Key=key, Body=variant.path.read_bytes())
            keys[label].append(key)
    return keys


def expected_name(key: str, data: Path) -> str:
    from bench.variants import course_expectations

    return course_expectations(data)[key.rsplit("/", 1)[-1]]


def event(key: str) -> dict:
    return {"Records": [{"eventName": "ObjectCreated:Put",
                         "s3": {"bucket": {"name": "bench-in"}, "object": {"key": key}}}]}


COLD_RUNS = 3


def cold(key: str) -> None:
    """Child process: import + model load + first video, timed from before the import."""
    started = time.perf_counter()
    from lambda_image import handlers

    imported = time.perf_counter()
    handlers.runtime()
    loaded = time.perf_counter()
    (result,) = handlers.s3_handler(event(key), None)["results"]
    done = time.perf_counter()
    print(json.dumps({"import_s": round(imported - started, 3),
                      "model_load_s": round(loaded - imported, 3),
                      "first_video_s": round(done - loaded, 3),
                      "cold_total_s": round(done - started, 3),
                      "first_result": result["people"][0]["name"]}))


def warm_runs(keys: list[str], repeat: int) -> list[dict]:
    """One warm-up call per key, then *repeat* timed calls each: per-call stage timings + wall."""
    from lambda_image import handlers

    handlers.runtime()
    for key in keys:
        handlers.s3_handler(event(key), None)
    runs = []
    for key in keys:
        for _ in range(repeat):
            started = time.perf_counter()
            (result,) = handlers.s3_handler(event(key), None)["results"]
            wall = (time.perf_counter() - started) * 1000
            runs.append({**result["timings_ms"], "wall": wall, "key": key,
                         "faces": len(result["faces"]),
                         "person": (result["people"] or [{"name": ""}])[0]["name"],
                         "extra_frames": result.get("extra_frames", 0)})
    return runs


def variant_pass(data: Path, cache: Path, count: int) -> dict:
    """bench/variants.py's first *count* variants once each (after the warm-up of the course clips):
    how many named their person first, and how many needed extra frames for a borderline face."""
    if not count:
        return {}
    import boto3

    from bench.variants import make_variants

    s3 = boto3.session.Session(region_name="us-east-1").client("s3")
    variants = make_variants(data, cache, count)
    expected = {}
    for v in variants:
        key = f"variants/{v.path.name}"
        s3.put_object(Bucket="bench-in", Key=key, Body=v.path.read_bytes())
        expected[key] = v.expected_name
    from lambda_image import handlers

    runs = []
    for key in expected:
        started = time.perf_counter()
        (result,) = handlers.s3_handler(event(key), None)["results"]
        runs.append({"key": key, "wall": (time.perf_counter() - started) * 1000,
                     "person": (result["people"] or [{"name": ""}])[0]["name"],
                     "extra_frames": result.get("extra_frames", 0)})
    return {"variants": len(runs),
            "variants_right_first": sum(r["person"] == expected[r["key"]] for r in runs),
            "variants_with_extra_frames": sum(r["extra_frames"] > 0 for r in runs),
            "variants_median_ms": round(statistics.median(r["wall"] for r in runs), 1)}


def stage_medians(runs: list[dict]) -> dict[str, float]:
    return {s: round(statistics.median(r.get(s, 0.0) for r in runs), 1) for s in (*STAGES, "wall")}


def facenet_child(keys: list[str], repeat: int, gallery: Path, tmp: Path) -> None:
    """Child process: the facenet embedder with random weights (timing only)."""
    import torch
    from facenet_pytorch import InceptionResnetV1

    weights = tmp / "random-inception-resnet-v1.pt"
    torch.manual_seed(546)
    torch.save(InceptionResnetV1(pretrained=None, classify=False).state_dict(), weights)
    os.environ.update({"GALLERY_PATH": str(gallery), "FACENET_WEIGHTS": str(weights)})
    runs = warm_runs(keys, repeat)
    print(json.dumps({"embedder": "facenet", "weights": "random (timing only)",
                      "gallery": str(gallery), "repeat": repeat,
                      "median_ms": stage_medians(runs),
                      "faces_median": statistics.median(r["faces"] for r in runs),
                      "peak_rss_mb": round(resource.getrusage(
                          resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path,
                        default=Path(os.environ.get("SHARED_DATA", REPO.parent / "shared" / "data"))
                        / "cse546-2023")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--resolution-repeat", type=int, default=3)
    parser.add_argument("--facenet-gallery", type=Path, default=None,
                        help="data.pt (default: cse546-2025/data.pt beside --data)")
    parser.add_argument("--cache", type=Path, default=REPO / ".cache" / "bench" / "scaled")
    parser.add_argument("--variants", type=int, default=100,
                        help="bench/variants.py variants run once each (borderline share)")
    parser.add_argument("--variants-cache", type=Path,
                        default=REPO / ".cache" / "bench" / "variants")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "out" / "function.json")
    parser.add_argument("--cold-child", metavar="KEY")
    parser.add_argument("--facenet-child", nargs="+", metavar="KEY")
    args = parser.parse_args()
    logs_to_stderr()
    facenet_gallery = args.facenet_gallery or args.data.parent / "cse546-2025" / "data.pt"
    if args.cold_child:
        cold(args.cold_child)
        return 0
    if args.facenet_child:
        with tempfile.TemporaryDirectory() as tmp:
            facenet_child(args.facenet_child, args.repeat, facenet_gallery, Path(tmp))
        return 0

    from localcloud.moto_server import MotoServer

    with tempfile.TemporaryDirectory() as tmp, MotoServer(log_path=Path(tmp) / "moto.log") as moto:
        os.environ.update({"AWS_ENDPOINT_URL": moto.url, "AWS_ACCESS_KEY_ID": "bench",
                           "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1"})
        os.environ.update(provision(args.data))
        clips = sorted(p.name for p in (args.data / "videos").glob("*.mp4"))
        scaled = scaled_keys(args.data, args.cache)

        # Several fresh processes: the first may read torch from disk rather than the page cache.
        colds = [json.loads(subprocess.run(
            [sys.executable, __file__, "--cold-child", clips[0]], stdout=subprocess.PIPE,
            text=True, check=True, env=os.environ).stdout) for _ in range(COLD_RUNS)]
        cold_start = {**sorted(colds, key=lambda c: c["cold_total_s"])[COLD_RUNS // 2],
                      "runs_total_s": [c["cold_total_s"] for c in colds]}

        from lambda_image import handlers

        handlers.runtime()
        for clip in clips:  # warm-up pass
            handlers.s3_handler(event(clip), None)
        per_clip: dict[str, dict] = {}
        walls: list[float] = []
        all_runs: list[dict] = []
        for clip in clips:
            runs = []
            for _ in range(args.repeat):
                started = time.perf_counter()
                (result,) = handlers.s3_handler(event(clip), None)["results"]
                wall = (time.perf_counter() - started) * 1000
                runs.append({**result["timings_ms"], "wall": wall})
                walls.append(wall)
            all_runs.extend(runs)
            person = result["people"][0]["name"]
            face = next(f for f in result["faces"] if f["name"] == person)
            per_clip[clip] = {
                "person": person,
                "distance": round(min(f["distance"] for f in result["faces"]), 3),
                "faces": len(result["faces"]),
                "decision": face.get("decision", ""),
                "extra_frames": result.get("extra_frames", 0),
                "median_ms": {s: round(statistics.median(r.get(s, 0.0) for r in runs), 1)
                              for s in (*STAGES, "wall")},
            }
        borderline = variant_pass(args.data, args.variants_cache, args.variants)
        by_resolution = {}
        for size, keys in scaled.items():
            runs = warm_runs(keys, args.resolution_repeat)
            by_resolution[size] = {"clips": len(keys), "repeat": args.resolution_repeat,
                                   "median_ms": stage_medians(runs),
                                   "correct": sum(r["person"] == expected_name(r["key"], args.data)
                                                  for r in runs) / len(runs)}
        child = subprocess.run([sys.executable, __file__, "--data", str(args.data),
                                "--repeat", str(args.resolution_repeat),
                                "--facenet-child", *clips],
                               stdout=subprocess.PIPE, text=True, check=True, env=os.environ)
        facenet = json.loads(child.stdout)
        summary = {
            "threads": int(os.environ["TORCH_NUM_THREADS"]),
            "repeat": args.repeat,
            "overall_median_ms": round(statistics.median(walls), 1),
            "cold_start": cold_start,
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "median_ms": stage_medians(all_runs),  # every timed call on the course clips
            "by_resolution": by_resolution,
            "borderline": {"course_clips": len(per_clip),
                           "course_with_extra_frames": sum(c["extra_frames"] > 0
                                                           for c in per_clip.values()),
                           **borderline},
            "facenet": facenet,
            "per_clip": per_clip,
        }
        text = json.dumps(summary, indent=1)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
        print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
