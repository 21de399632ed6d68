"""The function in the long run: one warm environment serves thousands of S3 invocations.

Each invocation is the S3 handler's real work through the local cloud (a course clip downloaded
from S3, recognised, its record read from DynamoDB, its CSV put in S3 and its message sent to
SQS), invoked with the same boto3 call as on AWS, one after another on a function of one slot, so
one environment serves them all. Every *sample_every* invocations the environment's resident
memory (its process and any children: an image's sandbox), open files and threads are read from
/proc.

Growth is judged by the curve's slope past the warm-up (least squares, bytes per invocation),
not by the last sample against the first, which allocator steps make noisy.

    python -m bench.soak --data DIR [--invocations 2000] [--kinds onnx torch image] --out bench/out
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from botocore.config import Config

from lambda_service.environment import descendants
from localcloud.cloud import DEFAULT_HANDLER, LocalCloud
from openstack_handler.provisioning.spec import ResourceSpec

#: The course clips the soak cycles through (each a different person; test_3 is too dark).
CLIPS = ("test_0.mp4", "test_1.mp4", "test_2.mp4", "test_4.mp4", "test_5.mp4", "test_6.mp4",
         "test_7.mp4", "test_8.mp4")
PAGE = os.sysconf("SC_PAGE_SIZE")


@dataclass(frozen=True)
class Sample:
    invocation: int  # how many invocations had finished
    rss_bytes: int
    open_files: int
    threads: int
    seconds: float


@dataclass
class Soak:
    kind: str
    samples: list[Sample] = field(default_factory=list)
    wrong: list[str] = field(default_factory=list)  # "clip: what it answered"
    warmup: int = 100

    def after_warmup(self) -> list[Sample]:
        return [s for s in self.samples if s.invocation >= self.warmup]

    def slope_bytes_per_invocation(self) -> float:
        """The least-squares slope of RSS over invocations, past the warm-up."""
        points = self.after_warmup()
        if len(points) < 3:
            raise ValueError(f"{len(points)} samples past the warm-up: too few for a slope")
        x = np.array([s.invocation for s in points], dtype=float)
        y = np.array([s.rss_bytes for s in points], dtype=float)
        return float(np.polyfit(x, y, 1)[0])

    def growth(self) -> float:
        """The last sample's RSS over the first past the warm-up, minus one."""
        points = self.after_warmup()
        return points[-1].rss_bytes / points[0].rss_bytes - 1

    def summary(self) -> dict[str, Any]:
        points = self.after_warmup()
        first, last = points[0], points[-1]
        return {"kind": self.kind, "invocations": self.samples[-1].invocation,
                "warmup": self.warmup, "wrong": len(self.wrong),
                "rss_mb_after_warmup": round(first.rss_bytes / 2**20, 1),
                "rss_mb_end": round(last.rss_bytes / 2**20, 1),
                "growth_pct": round(100 * self.growth(), 2),
                "slope_kb_per_invocation": round(self.slope_bytes_per_invocation() / 1024, 3),
                "open_files": [first.open_files, last.open_files],
                "threads": [first.threads, last.threads],
                "seconds": round(last.seconds, 1),
                "ms_per_invocation": round(1000 * last.seconds / last.invocation, 1)}


# -- /proc ---------------------------------------------------------------------------------------

def measure(pid: int, invocation: int, started: float) -> Sample:
    rss = files = threads = 0
    for member in (pid, *descendants(pid)):
        try:
            with open(f"/proc/{member}/statm") as statm:
                rss += int(statm.read().split()[1]) * PAGE
            files += len(os.listdir(f"/proc/{member}/fd"))
            threads += len(os.listdir(f"/proc/{member}/task"))
        except OSError:
            continue  # it ended between the listing and the read
    return Sample(invocation, rss, files, threads, time.monotonic() - started)


# -- the soak ------------------------------------------------------------------------------------

def soak_cloud(data: Path, work_dir: Path, *, runtime: str = "onnx", image: str | None = None,
               handler: str = DEFAULT_HANDLER) -> LocalCloud:
    """The local cloud with one slot of the function (not started)."""
    return LocalCloud(gallery=data / "encoding", students=data / "student_data.json",
                      resources=ResourceSpec(prefix="soak", function_timeout_s=60),
                      concurrency=1, work_dir=work_dir, runtime=runtime, image=image,
                      handler=handler)


def run_soak(cloud: LocalCloud, data: Path, *, kind: str, invocations: int, warmup: int,
             sample_every: int, expected: dict[str, str],
             progress: Callable[[Sample], None] | None = None) -> Soak:
    """*invocations* of the S3 handler on *cloud*'s video function, the clips cycled."""
    session = cloud.session()
    s3, sqs = session.client("s3"), session.client("sqs")
    lam = session.client("lambda", config=Config(read_timeout=120,
                                                 retries={"total_max_attempts": 1}))
    bucket, function = cloud.provisioned.input_bucket, cloud.resources.function_name
    for clip in CLIPS:
        s3.upload_file(str(data / "videos" / clip), bucket, f"soak/{clip}")
    result = Soak(kind=kind, warmup=warmup)
    started = time.monotonic()
    pid = 0
    for n in range(invocations):
        clip = CLIPS[n % len(CLIPS)]
        event = {"Records": [{"eventName": "ObjectCreated:Put", "s3": {
            "bucket": {"name": bucket}, "object": {"key": f"soak/{clip}", "eTag": str(n)}}}]}
        response = lam.invoke(FunctionName=function, Payload=json.dumps(event).encode())
        body = json.loads(response["Payload"].read())
        name = ("error: " + str(body.get("errorType"))) if "FunctionError" in response else (
            body["results"][0]["csv"].splitlines()[0].split(",")[0])
        if name != expected[clip]:
            result.wrong.append(f"{clip}: {name}")
        if (n + 1) % 50 == 0:  # the output queue's messages are nobody's here
            _drain(sqs, cloud.provisioned.output_queue_url)
        if (n + 1) % sample_every == 0:
            if not pid:
                (pid,) = cloud.function_stats()["pids"]
            sample = measure(pid, n + 1, started)
            result.samples.append(sample)
            if progress is not None:
                progress(sample)
    return result


def _drain(sqs: Any, url: str) -> None:
    """Delete what the queue holds (PurgeQueue is allowed once a minute)."""
    while True:
        messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10,
                                       WaitTimeSeconds=0).get("Messages", [])
        if not messages:
            return
        sqs.delete_message_batch(QueueUrl=url, Entries=[
            {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)])


def expected_names(data: Path) -> dict[str, str]:
    import csv

    with (data / "expected.csv").open(newline="") as handle:
        return {row["video"]: row["name"] for row in csv.DictReader(handle)}


# -- the benchmark -------------------------------------------------------------------------------

def plot(soaks: Sequence[Soak], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4))
    for soak in soaks:
        ax.plot([s.invocation for s in soak.samples],
                [s.rss_bytes / 2**20 for s in soak.samples],
                label=f"{soak.kind} ({soak.summary()['slope_kb_per_invocation']:+.2f} kB/invocation)")
    ax.axvline(soaks[0].warmup, color="grey", linestyle=":", linewidth=1)
    ax.set_xlabel("invocations served by one warm environment")
    ax.set_ylabel("resident memory, MB")
    ax.set_ylim(bottom=0)
    ax.legend()
    ax.set_title("The function's memory over a soak of the S3 handler")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.soak")
    parser.add_argument("--data", type=Path, required=True, help="the course data (cse546-2023)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--invocations", type=int, default=2000)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--sample-every", type=int, default=20)
    parser.add_argument("--kinds", nargs="+", default=["image", "torch"],
                        choices=("image", "onnx", "torch"))
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    expected = expected_names(args.data)
    soaks = []
    for kind in args.kinds:
        image = None
        if kind == "image":
            from localcloud.machines.images import image_name

            image = image_name()
        work = args.out / f"soak-{kind}"
        with soak_cloud(args.data, work, runtime="onnx" if kind == "image" else kind,
                        image=image) as cloud:
            soak = run_soak(cloud, args.data, kind=kind, invocations=args.invocations,
                            warmup=args.warmup, sample_every=args.sample_every,
                            expected=expected,
                            progress=lambda s, k=kind: print(
                                f"{k} {s.invocation} {s.rss_bytes / 2**20:.1f} MB "
                                f"{s.open_files} fds {s.threads} threads", file=sys.stderr))
        soaks.append(soak)
    document = {"soaks": [{**soak.summary(), "samples": [asdict(s) for s in soak.samples],
                           "wrong_answers": soak.wrong[:20]} for soak in soaks]}
    (args.out / "soak.json").write_text(json.dumps(document, indent=1) + "\n")
    plot(soaks, args.out / "soak.png")
    for soak in soaks:
        print(json.dumps(soak.summary()))
    return 0 if all(not soak.wrong for soak in soaks) else 1


if __name__ == "__main__":
    raise SystemExit(main())
