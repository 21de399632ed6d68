"""Benchmark the recognition function on the course clips: warm per-stage medians, cold start, RSS.

Runs the real handler against a moto server it starts itself (S3 object in, CSV + SQS message out),
one torch thread. Prints one JSON summary, and nothing else, on stdout (`make bench` tees stdout
to a .json file); log lines go to stderr.

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


def event(key: str) -> dict:
    return {"Records": [{"eventName": "ObjectCreated:Put",
                         "s3": {"bucket": {"name": "bench-in"}, "object": {"key": key}}}]}


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


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path,
                        default=Path(os.environ.get("SHARED_DATA", REPO.parent / "shared" / "data"))
                        / "cse546-2023")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--cold-child", metavar="KEY")
    args = parser.parse_args()
    logs_to_stderr()
    if args.cold_child:
        cold(args.cold_child)
        return 0

    from localcloud.moto_server import MotoServer

    with tempfile.TemporaryDirectory() as tmp, MotoServer(log_path=Path(tmp) / "moto.log") as moto:
        os.environ.update({"AWS_ENDPOINT_URL": moto.url, "AWS_ACCESS_KEY_ID": "bench",
                           "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1"})
        os.environ.update(provision(args.data))
        clips = sorted(p.name for p in (args.data / "videos").glob("*.mp4"))

        child = subprocess.run([sys.executable, __file__, "--cold-child", clips[0]],
                               stdout=subprocess.PIPE, text=True, check=True, env=os.environ)
        cold_start = json.loads(child.stdout)

        from lambda_image import handlers

        handlers.runtime()
        for clip in clips:  # warm-up pass
            handlers.s3_handler(event(clip), None)
        per_clip: dict[str, dict] = {}
        walls: list[float] = []
        for clip in clips:
            runs = []
            for _ in range(args.repeat):
                started = time.perf_counter()
                (result,) = handlers.s3_handler(event(clip), None)["results"]
                wall = (time.perf_counter() - started) * 1000
                runs.append({**result["timings_ms"], "wall": wall})
                walls.append(wall)
            per_clip[clip] = {
                "person": result["people"][0]["name"],
                "distance": round(min(f["distance"] for f in result["faces"]), 3),
                "faces": len(result["faces"]),
                "median_ms": {s: round(statistics.median(r.get(s, 0.0) for r in runs), 1)
                              for s in (*STAGES, "wall")},
            }
        summary = {
            "threads": int(os.environ["TORCH_NUM_THREADS"]),
            "repeat": args.repeat,
            "overall_median_ms": round(statistics.median(walls), 1),
            "cold_start": cold_start,
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "per_clip": per_clip,
        }
        print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
