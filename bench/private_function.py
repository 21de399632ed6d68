"""The real function on the private function service against the same image on the local cloud.

The shipped image (``make image``, the course gallery in a layer) served twice over HTTP:

- *local cloud*: the local cloud's own Lambda service, whose spec names the function;
- *private*: our Lambda service as a VM runs it (``authenticate``: every call SigV4-verified; no
  function in its spec; a state directory), the function made with boto3 ``CreateFunction``
  (``PackageType: Image``, ``ImageUri``, ``ImageConfig.Command``) and its slots with
  ``PutFunctionConcurrency`` — the calls an operator makes.

One slot each. The 8 course clips, each invoked once cold-ish (discarded) and then ``--rounds``
times, the two services alternating clip by clip (the order swapped each round), so that the
machine's drift falls on both alike. Reported: the median warm time per clip on each, their
ratio (target: the private service within 10 % of the local cloud), and the REPORT lines'
durations, which leave out the HTTP and signature work.

    .venv/bin/python -m bench.private_function --data ../shared/data/cse546-2023 [--out bench/out]
"""

from __future__ import annotations

import argparse
import base64
import csv
import json
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config

from lambda_service.endpoint import LambdaEndpoint
from lambda_service.spec import EndpointSpec
from localcloud.cloud import LocalCloud
from localcloud.machines import images

KEY, SECRET = "AKIDBENCHPRIVATE0001", "bench-private-secret"
RESERVED = ("AWS_REGION", "AWS_DEFAULT_REGION")
_DURATION = re.compile(r"REPORT RequestId: \S+\s+Duration: ([\d.]+) ms")
TARGET_RATIO = 1.10


def _client(url: str, **keys: str) -> Any:
    return boto3.client("lambda", endpoint_url=url, region_name="us-east-1",
                        aws_access_key_id=keys.get("key", "testing"),
                        aws_secret_access_key=keys.get("secret", "testing"),
                        config=Config(retries={"max_attempts": 0}, read_timeout=300))


def _invoke(lam: Any, function: str, bucket: str, key: str) -> tuple[float, float, str]:
    """(wall ms, the REPORT line's Duration ms, the first CSV row)."""
    payload = json.dumps({"Records": [{"eventName": "ObjectCreated:Put", "s3": {
        "bucket": {"name": bucket}, "object": {"key": key}}}]}).encode()
    started = time.perf_counter()
    answer = lam.invoke(FunctionName=function, Payload=payload, LogType="Tail")
    wall_ms = (time.perf_counter() - started) * 1000
    body = json.loads(answer["Payload"].read())
    if "FunctionError" in answer or body["results"][0]["status"] != "ok":
        raise RuntimeError(f"{function} on {key}: {body}")
    found = _DURATION.search(base64.b64decode(answer["LogResult"]).decode())
    if found is None:
        raise RuntimeError(f"{function} on {key}: no REPORT line in the log tail")
    return wall_ms, float(found[1]), body["results"][0]["csv"].splitlines()[0]


def _median(values: list[float]) -> float:
    return round(statistics.median(values), 1)


def run(data: Path, rounds: int, work: Path) -> dict[str, Any]:
    image = images.image_name()
    if not images.image_exists(image):
        raise SystemExit(f"{image} is not built: run `make image`")
    clips = sorted((data / "videos").glob("*.mp4"))
    with (data / "expected.csv").open(newline="") as handle:
        expected = {r["video"]: f"{r['name']},{r['major']},{r['year']}"
                    for r in csv.DictReader(handle)}
    with LocalCloud(gallery=data / "encoding", students=data / "student_data.json",
                    concurrency=1, image=image, work_dir=work / "cloud") as cloud:
        function = cloud.function_spec()
        bucket = cloud.provisioned.input_bucket
        s3 = cloud.session().client("s3")
        for clip in clips:
            s3.upload_file(str(clip), bucket, clip.name)
        spec = EndpointSpec(functions=(), credentials={KEY: SECRET}, authenticate=True,
                            default_concurrency=1, state_dir=str(work / "private-state"))
        with LambdaEndpoint(spec, log_path=work / "private.log") as private:
            operator = _client(private.url, key=KEY, secret=SECRET)
            operator.create_function(
                FunctionName=function.name, PackageType="Image", Role="arn:aws:iam::1:role/x",
                Code={"ImageUri": function.image}, ImageConfig={"Command": list(function.command)},
                Timeout=round(function.timeout_s), MemorySize=function.memory_mb,
                Environment={"Variables": {k: v for k, v in function.environment.items()
                                           if k not in RESERVED}})
            operator.put_function_concurrency(FunctionName=function.name,
                                              ReservedConcurrentExecutions=1)
            operator.get_waiter("function_active_v2").wait(
                FunctionName=function.name, WaiterConfig={"Delay": 1, "MaxAttempts": 300})
            services = {"local_cloud": _client(cloud.lambda_url), "private": operator}
            wall: dict[str, dict[str, list[float]]] = {s: {} for s in services}
            billed: dict[str, list[float]] = {s: [] for s in services}
            answers: dict[str, dict[str, str]] = {s: {} for s in services}
            for name, lam in services.items():  # first calls: the environments' cold starts
                for clip in clips:
                    _invoke(lam, function.name, bucket, clip.name)
            for round_ in range(rounds):
                order = list(services) if round_ % 2 == 0 else list(reversed(services))
                for clip in clips:
                    for name in order:
                        ms, duration, row = _invoke(services[name], function.name, bucket,
                                                    clip.name)
                        wall[name].setdefault(clip.name, []).append(ms)
                        billed[name].append(duration)
                        answers[name][clip.name] = row
                print(f"round {round_ + 1}/{rounds}", file=sys.stderr)
    per_clip = {name: {clip: _median(v) for clip, v in sorted(values.items())}
                for name, values in wall.items()}
    medians = {name: _median([ms for v in values.values() for ms in v])
               for name, values in wall.items()}
    ratio = round(medians["private"] / medians["local_cloud"], 3)
    return {
        "image": image, "clips": len(clips), "rounds": rounds,
        "warm_ms_median": medians, "warm_ms_per_clip": per_clip,
        "report_duration_ms_median": {n: _median(v) for n, v in billed.items()},
        "private_over_local_cloud": ratio, "target_ratio": TARGET_RATIO,
        "target_met": ratio <= TARGET_RATIO,
        "same_answers": answers["private"] == answers["local_cloud"],
        "right": {name: sum(row == expected.get(clip) for clip, row in rows.items())
                  for name, rows in answers.items()},
    }


def render(report: dict[str, Any]) -> str:
    m = report["warm_ms_median"]
    d = report["report_duration_ms_median"]
    lines = [
        "## The real function on the private service",
        "",
        (f"The shipped image ({report['image']}), the {report['clips']} course clips × "
        f"{report['rounds']} warm rounds, the two services alternating clip by clip."),
        "",
        "| service | warm ms per clip (median, client's wall) | REPORT Duration ms (median) |",
        "|---|---:|---:|",
        f"| local cloud | {m['local_cloud']} | {d['local_cloud']} |",
        f"| private (SigV4, CreateFunction) | {m['private']} | {d['private']} |",
        "",
        (f"Private ÷ local cloud: **×{report['private_over_local_cloud']}** (target ≤ "
        f"×{report['target_ratio']}: {'met' if report['target_met'] else 'NOT met'}); "
        f"the same answers on both: {report['same_answers']}; right: "
        f"{report['right']['private']}/{report['clips']} private, "
        f"{report['right']['local_cloud']}/{report['clips']} local cloud."),
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.private_function", description=__doc__)
    parser.add_argument("--data", type=Path, required=True, help="the course data directory")
    parser.add_argument("--out", type=Path, default=Path("bench/out"))
    parser.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bench-private-") as work:
        report = run(args.data, args.rounds, Path(work))
    (args.out / "private_function.json").write_text(json.dumps(report, indent=2) + "\n")
    print(render(report))
    # a missed time target is reported (REPORT.md says so); different answers are a failure
    right = all(n == report["clips"] for n in report["right"].values())
    return 0 if report["same_answers"] and right else 1


if __name__ == "__main__":
    raise SystemExit(main())
