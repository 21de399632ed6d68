"""Speed and size of the function per runtime, side by side in one run: cold start, warm time per
course clip, peak RSS; and the image's size.

Three kinds of execution environment, driven the same way (the local Lambda's Sandbox protocol,
lambda_service.pool), against a moto server this starts, with the real S3 handler (S3
object in, CSV + SQS message out), one thread:

* ``torch``: a worker process in the venv on the torch runtime (what ran before this image);
* ``onnx``: a worker process in the venv on the ONNX runtime (the export in --models);
* ``image``: the built image (`make image`) run as Lambda runs it: nspawn, read-only root,
  awslambdaric, the Runtime API (the gallery put into it as a user's COPY would).

Cold start = a fresh environment's whole way to its first answer: runtime start, imports, models,
and the first course clip (test_0) handled. The three kinds alternate within each repeat so
that they share the machine's load. Warm = every course clip `--warm` times in the environment
that has just started. Peak RSS = the environment's largest process's VmHWM.

    .venv/bin/python -m bench.bench_image --data ../shared/data/cse546-2023 --out bench/out
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

KINDS = ("torch", "onnx", "image")


def _event(bucket: str, key: str) -> bytes:
    return json.dumps({"Records": [{"eventName": "ObjectCreated:Put", "s3": {
        "bucket": {"name": bucket}, "object": {"key": key}}}]}).encode()


def _call(sandbox: Any, payload: bytes, timeout_s: float = 120.0) -> tuple[float, dict]:
    from lambda_service.worker import InvocationRequest

    started = time.perf_counter()
    sandbox.send(InvocationRequest(str(uuid.uuid4()), payload, time.monotonic() + timeout_s))
    reply = None
    while reply is None:
        reply = sandbox.poll_reply(0.5)
    body = json.loads(reply.payload)
    if reply.error:
        raise RuntimeError(f"invocation failed: {body}")
    return time.perf_counter() - started, body


def _peak_rss(sandbox: Any) -> int:
    from lambda_service.environment import ImageEnvironment, _vm_hwm

    if isinstance(sandbox, ImageEnvironment):
        return sandbox.peak_rss_bytes()
    return _vm_hwm(sandbox.pid)


def run(args: argparse.Namespace) -> dict[str, Any]:
    from lambda_service.environment import ImageSandboxes
    from lambda_service.image import with_files
    from lambda_service.pool import WorkerSandboxes
    from lambda_service.spec import FunctionSpec
    from lambda_service.worker import WorkerConfig
    from localcloud.cloud import IMAGE_GALLERY, EndpointSession
    from localcloud.machines import images
    from localcloud.moto_server import MotoServer
    from openstack_handler.provisioning.aws import (
        function_environment,
        load_student_records,
        provision,
        seed_students,
    )
    from openstack_handler.provisioning.spec import ResourceSpec

    image = images.image_name()
    if not images.image_exists(image):
        raise SystemExit(f"{image} is not built: run `make image`")
    clips = sorted((args.data / "videos").glob("*.mp4"))
    report: dict[str, Any] = {"image": image, "kinds": {}}
    with MotoServer(log_path=args.out / "bench-image-moto.log") as moto:
        session = EndpointSession(moto.url)
        resources = ResourceSpec(prefix="bench")
        provisioned = provision(session, resources)
        seed_students(session, provisioned.students_table,
                      load_student_records(args.data / "student_data.json"))
        s3 = session.client("s3")
        for clip in clips:
            s3.upload_file(str(clip), provisioned.input_bucket, clip.name)
        base_env = {"AWS_ENDPOINT_URL": moto.url, "AWS_ACCESS_KEY_ID": "testing",
                    "AWS_SECRET_ACCESS_KEY": "testing", "INFERENCE_THREADS": "1",
                    "OMP_NUM_THREADS": "1"}
        venv_env = function_environment(resources, provisioned,
                                        str((args.data / "encoding").resolve()), base_env)
        image_env = function_environment(resources, provisioned, IMAGE_GALLERY, base_env)
        factories = {
            "torch": (WorkerSandboxes(), {**venv_env, "INFERENCE_RUNTIME": "torch"}),
            "onnx": (WorkerSandboxes(), {**venv_env, "INFERENCE_RUNTIME": "onnx",
                                         "MODEL_DIR": str(args.models)}),
            "image": (ImageSandboxes(FunctionSpec(
                name="bench", image=with_files(image, {IMAGE_GALLERY: args.data / "encoding"}),
                memory_mb=512, environment=image_env)), image_env),
        }
        for factory, _ in factories.values():
            factory.open()
        results: dict[str, dict[str, list[float]]] = {
            k: {"cold_s": [], "warm_ms": [], "peak_rss_mb": []} for k in KINDS}
        per_clip: dict[str, dict[str, list[float]]] = {k: {} for k in KINDS}
        stages: dict[str, dict[str, list[float]]] = {k: {} for k in KINDS}
        try:
            for repeat in range(args.repeat):
                for kind in (KINDS if repeat % 2 == 0 else tuple(reversed(KINDS))):
                    factory, env = factories[kind]
                    config = WorkerConfig(
                        function_name="bench", handler="lambda_image.handlers:s3_handler",
                        memory_mb=512, function_arn="arn:aws:lambda:us-east-1:0:function:bench",
                        region="us-east-1", environment=env, log_stream_name="bench")
                    started = time.perf_counter()
                    sandbox = factory.create(config)
                    try:
                        ready = sandbox.wait_ready(120)
                        if ready.init_error:
                            raise RuntimeError(f"{kind}: init failed: {ready.init_error}")
                        _, body = _call(sandbox, _event(provisioned.input_bucket, clips[0].name))
                        cold = time.perf_counter() - started
                        assert body["results"][0]["status"] == "ok", body
                        for _ in range(args.warm):
                            for clip in clips:
                                elapsed, body = _call(sandbox, _event(provisioned.input_bucket,
                                                                      clip.name))
                                per_clip[kind].setdefault(clip.name, []).append(elapsed * 1000)
                                results[kind]["warm_ms"].append(elapsed * 1000)
                                for stage, ms in body["results"][0]["timings_ms"].items():
                                    stages[kind].setdefault(stage, []).append(ms)
                        results[kind]["cold_s"].append(cold)
                        results[kind]["peak_rss_mb"].append(_peak_rss(sandbox) / 2**20)
                        print(f"{kind} repeat {repeat}: cold {cold:.2f} s, peak RSS "
                              f"{results[kind]['peak_rss_mb'][-1]:.0f} MB", file=sys.stderr)
                    finally:
                        sandbox.kill()
                        sandbox.reap()
        finally:
            for factory, _ in factories.values():
                factory.close()
    for kind in KINDS:
        r = results[kind]
        report["kinds"][kind] = {
            "cold_s_median": round(statistics.median(r["cold_s"]), 3),
            "cold_s": [round(v, 3) for v in r["cold_s"]],
            "warm_ms_median": round(statistics.median(r["warm_ms"]), 1),
            "warm_ms_per_clip": {c: round(statistics.median(v), 1)
                                 for c, v in sorted(per_clip[kind].items())},
            "peak_rss_mb": round(max(r["peak_rss_mb"]), 1),
            "stages_ms_median": {s: round(statistics.median(v), 1)
                                 for s, v in stages[kind].items()}}
    torch = report["kinds"]["torch"]
    report["ratios_vs_torch"] = {kind: {
        "cold": round(report["kinds"][kind]["cold_s_median"] / torch["cold_s_median"], 2),
        "warm": round(report["kinds"][kind]["warm_ms_median"] / torch["warm_ms_median"], 2),
        "peak_rss": round(report["kinds"][kind]["peak_rss_mb"] / torch["peak_rss_mb"], 2)}
        for kind in ("onnx", "image")}
    if images.REPORT.is_file():
        sizes = json.loads(images.REPORT.read_text())
        report["image_size_mb"] = {k: round(sizes[k] / 1e6) for k in (
            "uncompressed_bytes", "pushed_gzip_bytes", "base_gzip_bytes", "added_gzip_bytes")}
    return report


def markdown(report: dict[str, Any]) -> str:
    k, r = report["kinds"], report["ratios_vs_torch"]
    lines = ["| | torch (venv worker) | onnx (venv worker) | onnx, the image (nspawn, Runtime API) |",
             "|---|---:|---:|---:|"]
    lines.append("| cold start, median (runtime start, import, models, first clip) | "
                 f"{k['torch']['cold_s_median']:.2f} s | {k['onnx']['cold_s_median']:.2f} s "
                 f"(×{r['onnx']['cold']}) | {k['image']['cold_s_median']:.2f} s "
                 f"(×{r['image']['cold']}) |")
    lines.append(f"| warm per course clip, median | {k['torch']['warm_ms_median']:.0f} ms | "
                 f"{k['onnx']['warm_ms_median']:.0f} ms (×{r['onnx']['warm']}) | "
                 f"{k['image']['warm_ms_median']:.0f} ms (×{r['image']['warm']}) |")
    lines.append(f"| peak RSS | {k['torch']['peak_rss_mb']:.0f} MB | "
                 f"{k['onnx']['peak_rss_mb']:.0f} MB (×{r['onnx']['peak_rss']}) | "
                 f"{k['image']['peak_rss_mb']:.0f} MB (×{r['image']['peak_rss']}) |")
    names = list(k["torch"]["stages_ms_median"])
    lines.append("| stages, median ms (" + ", ".join(names) + ") | " + " | ".join(
        " / ".join(f"{k[kind]['stages_ms_median'][n]:.0f}" for n in names)
        for kind in KINDS) + " |")
    if "image_size_mb" in report:
        s = report["image_size_mb"]
        lines.append(f"\nImage {report['image']}: {s['uncompressed_bytes']} MB uncompressed, "
                     f"{s['pushed_gzip_bytes']} MB pushed (gzip), of which the base "
                     f"{s['base_gzip_bytes']} MB and our layers {s['added_gzip_bytes']} MB.")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--models", type=Path, default=None,
                        help="an export-onnx directory for the venv's onnx runtime "
                             "(default: exported now into bench/out/models)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--warm", type=int, default=3, help="rounds over the 8 clips per start")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.models is None:
        from lambda_image.export import export_models

        args.models = args.out / "models"
        export_models(args.models)
    report = run(args)
    (args.out / "image.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / "image.md").write_text(markdown(report))
    print(markdown(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
