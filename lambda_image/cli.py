"""Command line without any cloud: recognise local videos, build and inspect galleries."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from lambda_image.config import FunctionSettings
from lambda_image.errors import InvalidInput, RecognitionError


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lambda_image", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    rec = sub.add_parser("recognize", help="print one JSON line per video")
    rec.add_argument("--gallery", type=Path, required=True)
    rec.add_argument("--threshold", type=float, default=None)
    rec.add_argument("--facenet-weights", type=Path, default=None)
    rec.add_argument("videos", nargs="+", type=Path)

    gal = sub.add_parser("gallery", help="build or inspect a gallery file")
    gsub = gal.add_subparsers(dest="gallery_command", required=True)
    enr = gsub.add_parser("enroll", help="DIR/<person>/*.jpg|*.png → gallery file")
    enr.add_argument("--embedder", choices=("dlib", "facenet"), required=True)
    enr.add_argument("--images", type=Path, required=True)
    enr.add_argument("--out", type=Path, required=True)
    enr.add_argument("--facenet-weights", type=Path, default=None)
    ins = gsub.add_parser("inspect", help="summarise a gallery file as JSON")
    ins.add_argument("file", type=Path)

    exp = sub.add_parser("export-onnx", help="export the networks to ONNX (needs torch) with "
                                             "the dlib files they use: the onnx runtime's "
                                             "MODEL_DIR")
    exp.add_argument("--out", type=Path, required=True)
    exp.add_argument("--facenet-weights", type=Path, default=None,
                     help="InceptionResnetV1 vggface2 state dict; without it the export serves "
                          "dlib galleries only")

    args = parser.parse_args(argv)
    try:
        if args.command == "recognize":
            return _recognize(args)
        if args.command == "export-onnx":
            return _export(args)
        if args.gallery_command == "enroll":
            return _enroll(args)
        return _inspect(args)
    except RecognitionError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _settings(args: argparse.Namespace, **overrides: object) -> FunctionSettings:
    from dataclasses import replace

    base = FunctionSettings.from_env()
    weights = getattr(args, "facenet_weights", None)
    return replace(base, **({"facenet_weights": weights} if weights else {}), **overrides)


def _recognize(args: argparse.Namespace) -> int:
    from lambda_image.recognize import Recognizer

    recognizer = Recognizer.from_settings(_settings(args, gallery_path=args.gallery,
                                                    match_threshold=args.threshold))
    failed = 0
    for video in args.videos:
        line: dict[str, object] = {"video": str(video), "names": [], "faces": [], "error": None}
        try:
            result = recognizer.recognize(video)
            line.update(names=result.names or ["no_persons_found"],
                        faces=[f.as_dict() for f in result.faces],
                        frames_sampled=result.frames_sampled,
                        extra_frames=result.extra_frames, timings_ms=result.timings_ms)
        except (InvalidInput, OSError) as exc:
            failed += 1
            line["error"] = f"{type(exc).__name__}: {exc}"
        print(json.dumps(line), flush=True)
    return 1 if failed else 0


def _enroll(args: argparse.Namespace) -> int:
    from lambda_image.detection import FaceDetector
    from lambda_image.embedders import build_embedder
    from lambda_image.gallery import enroll, enrollment_images, inspect_gallery, save_gallery

    settings = _settings(args)
    runtime = settings.inference_runtime
    model_dir = settings.require_model_dir() if runtime == "onnx" else None
    embedder = build_embedder(args.embedder, facenet_weights=settings.facenet_weights,
                              dlib_encoder=settings.dlib_runner,
                              cache_dir=settings.model_cache_dir, runtime=runtime,
                              model_dir=model_dir, threads=settings.inference_threads)
    detector = FaceDetector(runtime=runtime, model_dir=model_dir,
                            threads=settings.inference_threads)
    gallery = enroll(enrollment_images(args.images), detector=detector, embedder=embedder)
    save_gallery(gallery, args.out)
    print(json.dumps({"out": str(args.out), **inspect_gallery(gallery)}))
    return 0


def _export(args: argparse.Namespace) -> int:
    from lambda_image.export import export_models

    manifest = export_models(args.out, facenet_weights=args.facenet_weights)
    print(json.dumps({"out": str(args.out), "facenet": manifest["facenet"] is not None,
                      "files": {name: info["bytes"] for name, info in manifest["files"].items()}}))
    return 0


def _inspect(args: argparse.Namespace) -> int:
    from lambda_image.gallery import inspect_gallery, load_gallery

    print(json.dumps({"file": str(args.file), **inspect_gallery(load_gallery(args.file))}))
    return 0
