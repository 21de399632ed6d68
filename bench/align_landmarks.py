"""Can dlib leave the image? Measures aligning faces for dlib's ResNet from MTCNN's own five
landmarks (a similarity transform onto a template, a numpy warp) instead of dlib's HOG
re-detection + 5-point predictor + get_face_chips, on the ONNX runtime.

The template is fitted on the course clips' first frames only: MTCNN's landmarks mapped into the
chips dlib cuts there (get_face_chip_details' rectangle and angle, as dlib's get_mapping_to_chip
turns them into a transform), averaged. Then both alignments run the whole function
(lambda_image.recognize.Recognizer, borderline rule included) on the course clips, the 100
variants and re-encoded first-frame copies of test_5 (its unenrolled bystander is the face a
worse alignment would name), and per-face distances on every sampled course frame are compared.

    .venv/bin/python -m bench.align_landmarks --data ../shared/data/cse546-2023 \
        --models DIR --out bench/out/align_landmarks.json
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def chip_transform(details: Any) -> np.ndarray:
    """Image → chip affine (2×3) of a dlib chip_details, as dlib's get_mapping_to_chip builds
    it: the rectangle's corners, rotated about its centre by the angle, onto the chip's corners."""
    rect = details.rect
    cx, cy = (rect.left() + rect.right()) / 2, (rect.top() + rect.bottom()) / 2
    cos, sin = math.cos(details.angle), math.sin(details.angle)

    def rotate(x: float, y: float) -> tuple[float, float]:
        dx, dy = x - cx, y - cy
        return cx + cos * dx - sin * dy, cy + sin * dx + cos * dy

    src = np.array([rotate(rect.left(), rect.top()), rotate(rect.right(), rect.top()),
                    rotate(rect.right(), rect.bottom())])
    dst = np.array([[0, 0], [details.cols - 1, 0], [details.cols - 1, details.rows - 1]], float)
    a = np.hstack([src, np.ones((3, 1))])
    return np.linalg.solve(a, dst).T


def similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (Umeyama, no reflection) mapping *src* points onto *dst*: 2×3."""
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s, d = src - mu_s, dst - mu_d
    u, sig, vt = np.linalg.svd(d.T @ s / len(src))
    sign = np.diag([1.0, np.sign(np.linalg.det(u @ vt))])
    rot = u @ sign @ vt
    scale = np.trace(np.diag(sig) @ sign) / (s ** 2).sum(1).mean()
    return np.hstack([scale * rot, (mu_d - scale * rot @ mu_s)[:, None]])


def warp(rgb: np.ndarray, to_chip: np.ndarray, size: int = 150) -> np.ndarray:
    """The chip: each chip pixel sampled bilinearly where the inverse transform puts it."""
    inv = np.linalg.inv(np.vstack([to_chip, [0, 0, 1]]))[:2]
    v, u = np.mgrid[0:size, 0:size].astype(np.float64)
    x = inv[0, 0] * u + inv[0, 1] * v + inv[0, 2]
    y = inv[1, 0] * u + inv[1, 1] * v + inv[1, 2]
    h, w = rgb.shape[:2]
    x0 = np.clip(np.floor(x).astype(int), 0, w - 2)
    y0 = np.clip(np.floor(y).astype(int), 0, h - 2)
    fx = np.clip(x - x0, 0, 1)[..., None]
    fy = np.clip(y - y0, 0, 1)[..., None]
    img = rgb.astype(np.float64)
    top = img[y0, x0] * (1 - fx) + img[y0, x0 + 1] * fx
    bottom = img[y0 + 1, x0] * (1 - fx) + img[y0 + 1, x0 + 1] * fx
    return np.clip(np.rint(top * (1 - fy) + bottom * fy), 0, 255).astype(np.uint8)


class LandmarkAlignedEmbedder:
    """dlib's ResNet (ONNX) on chips aligned from MTCNN's landmarks: no dlib at all."""

    name = "dlib"
    dim = 128

    def __init__(self, encode: Any, template: np.ndarray) -> None:
        self._encode = encode
        self.template = template

    def chips(self, rgb: np.ndarray, faces: list) -> list[np.ndarray]:
        return [warp(rgb, similarity(f.landmarks, self.template)) for f in faces]

    def embed(self, rgb: np.ndarray, faces: list) -> np.ndarray:
        if not faces:
            return np.zeros((0, self.dim), dtype=np.float32)
        return self._encode(self.chips(rgb, faces))


def fit_template(recognizer: Any, clips: list[Path]) -> np.ndarray:
    from lambda_image.video import sample_frames

    embedder = recognizer.embedder
    points = []
    for clip in clips:
        frame = next(sample_frames(clip, max_frames=1))
        faces = recognizer.detector.detect(frame.small, scale=frame.scale)
        shapes = embedder.shapes(frame.rgb, faces[:1])
        details = embedder._dlib.get_face_chip_details(shapes[0], 150, 0.25)
        m = chip_transform(details)
        lms = faces[0].landmarks
        points.append(lms @ m[:, :2].T + m[:, 2])
    return np.mean(points, axis=0)


def outcomes(recognizer: Any, videos: list[tuple[Path, str]]) -> dict[str, Any]:
    right = wrong = unknown = extra = 0
    bystander_named = 0
    for path, expected in videos:
        result = recognizer.recognize(path)
        names = [n for n in result.names if n != "unknown_person"]
        if names and names[0] == expected:
            right += 1
        elif names:
            wrong += 1
        else:
            unknown += 1
        bystander_named += len([n for n in names if n != expected])
        extra += result.extra_frames > 0
    return {"videos": len(videos), "right_first": right, "wrong_first": wrong,
            "no_known_name": unknown, "someone_else_named": bystander_named,
            "with_extra_frames": extra}


def per_face(dlib_rec: Any, lm_rec: Any, clips: list[Path]) -> dict[str, Any]:
    from lambda_image.video import sample_frames

    deltas, same = [], 0
    rows = []
    for clip in clips:
        for frame in sample_frames(clip, max_frames=8):
            faces = dlib_rec.detector.detect(frame.small, scale=frame.scale)
            if not faces:
                continue
            a = dlib_rec.matcher.match(dlib_rec.embedder.embed(frame.rgb, faces))
            b = lm_rec.matcher.match(lm_rec.embedder.embed(frame.rgb, faces))
            for ma, mb in zip(a, b, strict=True):
                deltas.append(mb.distance - ma.distance)
                same += ma.nearest == mb.nearest
                rows.append((clip.name, frame.index, ma.nearest, round(ma.distance, 4),
                             mb.nearest, round(mb.distance, 4)))
    return {"faces": len(deltas), "same_nearest": same,
            "delta_median": round(statistics.median(deltas), 4),
            "delta_max": round(max(deltas), 4), "delta_min": round(min(deltas), 4),
            "rows": rows}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--models", type=Path, required=True, help="an export-onnx directory")
    parser.add_argument("--work", type=Path, default=REPO / ".cache" / "bench-variants")
    parser.add_argument("--test5-copies", type=int, default=60)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    from bench.variants import course_expectations, make_source_variants, make_variants
    from lambda_image.config import FunctionSettings
    from lambda_image.recognize import Recognizer

    settings = FunctionSettings(gallery_path=args.data / "encoding", inference_runtime="onnx",
                                model_dir=args.models)
    dlib_rec = Recognizer.from_settings(settings)
    expected = course_expectations(args.data)
    course = [args.data / "videos" / v for v in sorted(expected)]
    template = fit_template(dlib_rec, course)
    lm_rec = Recognizer.from_settings(settings)
    lm_rec.embedder = LandmarkAlignedEmbedder(dlib_rec.embedder._encode, template)

    sets = {
        "course": [(p, expected[p.name]) for p in course],
        "variants": [(v.path, v.expected_name)
                     for v in make_variants(args.data, args.work / "variants", 100)],
        "test5_first": [(v.path, v.expected_name) for v in make_source_variants(
            args.data, args.work / "test5", "test_5.mp4", args.test5_copies, seed=15,
            max_offset_s=0.0)],
    }
    report: dict[str, Any] = {"template": template.round(2).tolist(), "sets": {}}
    for name, videos in sets.items():
        for label, rec in (("dlib_alignment", dlib_rec), ("landmark_alignment", lm_rec)):
            started = time.perf_counter()
            result = outcomes(rec, videos)
            result["ms_per_video"] = round((time.perf_counter() - started) * 1000 / len(videos))
            report["sets"].setdefault(name, {})[label] = result
            print(name, label, result, flush=True)
    report["course_faces"] = per_face(dlib_rec, lm_rec, course)
    print({k: v for k, v in report["course_faces"].items() if k != "rows"})
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
