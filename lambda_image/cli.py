"""Command line without any cloud: recognise local videos, build and inspect galleries.

Errors follow two conventions. A per-item error (a video that is missing or cannot be decoded)
is that item's JSON line on stdout, with "error" set; the other items are still processed and
the exit status is 1. A usage error (bad arguments, or a gallery or weights file the command
cannot start without) is one line on stderr, ``python -m lambda_image CMD: error: ...`` as
argparse writes its own, nothing on stdout, and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from lambda_image.config import FunctionSettings
from lambda_image.errors import InvalidInput, RecognitionError

PROG = "python -m lambda_image"
EXIT_STATUS = ("exit status: 0 every video recognised; 1 some video failed (its JSON line says "
               "why in \"error\"; the others are still printed); 2 usage error: bad arguments, "
               "or a gallery or weights file the command cannot start without (one line on "
               "stderr, nothing on stdout)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description=__doc__.split("\n\n")[0], epilog=EXIT_STATUS)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    rec = sub.add_parser(
        "recognize", help="print one JSON line per video",
        description="Recognise the people in local video files with the function's own "
                    "pipeline (no cloud): one JSON line per video on stdout, "
                    '{"video", "names", "faces", "frames_sampled", "timings_ms", "error"}.',
        epilog=EXIT_STATUS)
    rec.add_argument("--gallery", type=Path, required=True, metavar="FILE",
                     help="gallery file: the course `encoding` pickle (dlib) or a facenet "
                          "data.pt; `gallery enroll` makes one")
    rec.add_argument("--threshold", type=float, default=None, metavar="DISTANCE",
                     help="distance above which a face is unknown_person (default: the "
                          "embedder's, dlib 0.6; $MATCH_THRESHOLD)")
    rec.add_argument("--facenet-weights", type=Path, default=None, metavar="FILE",
                     help="InceptionResnetV1 vggface2 state dict, for a facenet gallery "
                          "(default: $FACENET_WEIGHTS, else $TORCH_HOME/checkpoints/...)")
    rec.add_argument("videos", nargs="+", type=Path, metavar="VIDEO", help="video files")

    gal = sub.add_parser("gallery", help="build or inspect a gallery file")
    gsub = gal.add_subparsers(dest="gallery_command", required=True, metavar="COMMAND")
    enr = gsub.add_parser(
        "enroll", help="DIR/<person>/*.jpg|*.png → gallery file",
        description="Enrol one embedding per photo (its largest face) under the name of the "
                    "folder it is in, and write a gallery in the embedder's format.")
    enr.add_argument("--embedder", choices=("dlib", "facenet"), required=True,
                     help="dlib: 128-d, written as the course's `encoding` pickle; facenet: "
                          "512-d, written as a data.pt")
    enr.add_argument("--images", type=Path, required=True, metavar="DIR",
                     help="one folder per person, holding .jpg/.jpeg/.png photos")
    enr.add_argument("--out", type=Path, required=True, metavar="FILE",
                     help="the gallery file to write")
    enr.add_argument("--facenet-weights", type=Path, default=None, metavar="FILE",
                     help="InceptionResnetV1 vggface2 state dict, for --embedder facenet "
                          "(default: $FACENET_WEIGHTS, else $TORCH_HOME/checkpoints/...)")
    ins = gsub.add_parser("inspect", help="summarise a gallery file as JSON",
                          description="Print a gallery's embedder, size and people as JSON.")
    ins.add_argument("file", type=Path, metavar="FILE", help="gallery file")
    exp = sub.add_parser(
        "export-onnx", help="export the networks to ONNX (needs torch) with the dlib files "
                            "they use: the onnx runtime's MODEL_DIR",
        description="Export MTCNN's nets, our dlib ResNet port and (given its weights) "
                    "InceptionResnetV1 to ONNX, with dlib's 5-point predictor, the saved HOG "
                    "detector and a manifest: the directory INFERENCE_RUNTIME=onnx reads as "
                    "MODEL_DIR.")
    exp.add_argument("--out", type=Path, required=True, metavar="DIR",
                     help="the directory to write")
    exp.add_argument("--facenet-weights", type=Path, default=None, metavar="FILE",
                     help="InceptionResnetV1 vggface2 state dict; without it the export serves "
                          "dlib galleries only")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "recognize":
            return _recognize(args)
        if args.command == "export-onnx":
            return _export(args)
        if args.gallery_command == "enroll":
            return _enroll(args)
        return _inspect(args)
    except RecognitionError as exc:  # a usage error: the command cannot start (see above)
        command = " ".join(filter(None, [PROG, args.command,
                                         getattr(args, "gallery_command", None)]))
        print(f"{command}: error: {exc}", file=sys.stderr)
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
