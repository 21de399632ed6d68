"""Measure what the borderline rule is chosen from: per face and per sampled frame, the best gallery
distance, the runner-up (nearest *other* identity) and the box, on every frame the sampler would
give (no early stop), for the course clips, bench/variants.py's variants and re-encoded copies of
test_5.mp4 (whose unenrolled bystander is the face a wrong name would be given to).

    .venv/bin/python -m bench.borderline --data ../shared/data/cse546-2023 --out bench/out/borderline.json
    .venv/bin/python -m bench.borderline --replay bench/out/borderline.json [--fraction 0.8 ...]

The second form replays lambda_image.recognize.pull (the function's own sampling and rule) on the
measured faces, for the rule as configured and for one frame deciding (band 0), and prints per set
how many videos name their person first, lose a true match, name the bystander (or anyone else
wrongly), and sample extra frames.

Each face is labelled: `bystander` (test_5's unenrolled boy, by position), `true` (the clip's
person, nearest to its own gallery entry), `wrong` (the clip's person nearest to someone else) or
`other` (any further face).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("TORCH_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

#: The clip with a second, unenrolled person (a boy beside vin_diesel).
BYSTANDER_CLIP = "test_5.mp4"
SETS = ("course", "variants", "test5_late", "test5_first")
#: the course data these measurements read ($SHARED_DATA, else ../shared/data beside the repo)
DEFAULT_DATA = Path(os.environ.get("SHARED_DATA", REPO.parent / "shared" / "data")) / "cse546-2023"
UNKNOWN_NAME = "unknown_person"


@dataclass
class FaceRow:
    video: str
    source: str
    frame: int  # sample number (0 = first frame)
    index: int  # stream frame index
    box: list[int]
    nearest: str
    distance: float
    runner_up: str
    runner_up_distance: float
    label: str


def face_label(source: str, nearest: str, expected: str, center_x: float, *,
               largest: bool) -> str:
    """test_5's boy stands right of vin_diesel (centres at 73 % and 32 % of the width; a crop of
    at most 15 % keeps them either side of the middle); elsewhere the largest face is the clip's
    person."""
    if source == BYSTANDER_CLIP and center_x > 0.5:
        return "bystander"
    if nearest == expected:
        return "true"
    return "wrong" if largest else "other"


def measure_video(recognizer, path: Path, source: str, expected: str,
                  max_frames: int) -> list[FaceRow]:
    import numpy as np

    from lambda_image.video import sample_frames

    gallery = recognizer.gallery
    rows = gallery.embeddings.astype(np.float32)
    names = np.asarray(gallery.names)
    out: list[FaceRow] = []
    for sample, frame in enumerate(sample_frames(path, max_frames=max_frames, max_decode_s=60.0,
                                                 detect_max_side=recognizer.detect_max_side)):
        faces = recognizer.detector.detect(frame.small, scale=frame.scale)
        if not faces:
            continue
        embeddings = recognizer.embedder.embed(frame.rgb, faces)
        distances = np.linalg.norm(rows[None, :, :] - embeddings[:, None, :], axis=2)
        width = frame.rgb.shape[1]
        for i, face in enumerate(faces):
            order = np.argsort(distances[i])
            best = order[0]
            other = next((j for j in order[1:] if names[j] != names[best]), None)
            nearest = str(names[best])
            label = face_label(source, nearest, expected, (face.box[0] + face.box[2]) / 2 / width,
                               largest=i == 0)
            out.append(FaceRow(
                video=path.name, source=source, frame=sample, index=frame.index,
                box=[round(v) for v in face.box], nearest=nearest,
                distance=round(float(distances[i, best]), 4),
                runner_up=str(names[other]) if other is not None else "",
                runner_up_distance=(round(float(distances[i, other]), 4) if other is not None
                                    else float("inf")),
                label=label))
    return out


def summary(rows: list[FaceRow]) -> dict:
    def stats(values: list[float]) -> dict:
        if not values:
            return {}
        values = sorted(values)
        return {"n": len(values), "min": values[0], "p05": values[int(0.05 * (len(values) - 1))],
                "median": statistics.median(values), "p95": values[int(0.95 * (len(values) - 1))],
                "max": values[-1]}

    out = {}
    for label in sorted({r.label for r in rows}):
        sel = [r for r in rows if r.label == label]
        first = [r for r in sel if r.frame == 0]
        out[label] = {"distance": stats([r.distance for r in sel]),
                      "margin": stats([r.runner_up_distance - r.distance for r in sel]),
                      "first_frame_distance": stats([r.distance for r in first]),
                      "first_frame_margin": stats([r.runner_up_distance - r.distance
                                                   for r in first])}
    return out


# -- replaying the rule on the measured faces ----------------------------------------------------

def replay(faces: list[dict], rule, spacing: dict[str, float],
           max_frames: int = 8) -> dict[str, dict]:
    """Run lambda_image.recognize.pull (the function's own sampling and rule) on measured faces:
    per video, the names it would report, its decisions and the extra frames it would sample.
    *spacing*: each identity's (lambda_image.matching.spacing)."""
    from collections import defaultdict

    from lambda_image import confirm
    from lambda_image.matching import UNKNOWN
    from lambda_image.recognize import FaceResult, Look, decide, pull

    by_video: dict[str, dict[int, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for row in faces:
        by_video[row["video"]][row["frame"]].append(row)
    out = {}
    for video, frames in by_video.items():
        looks = []
        for sample in range(max_frames):
            rows = frames.get(sample, [])
            look = Look(rows[0]["index"] if rows else sample, [], [])
            for r in rows:
                look.faces.append(FaceResult(
                    name=r["nearest"] if r["distance"] <= rule.threshold else UNKNOWN,
                    distance=r["distance"], frame=look.index, box=tuple(r["box"]),
                    nearest=r["nearest"], runner_up=r["runner_up"],
                    runner_up_distance=r["runner_up_distance"],
                    decision=confirm.first_look(r["distance"], spacing[r["nearest"]], rule),
                    bound=rule.bound(spacing[r["nearest"]]),
                    frames=(look.index,), distances=(r["distance"],)))
                look.sightings.append(confirm.Sighting(
                    box=tuple(float(v) for v in r["box"]),
                    identities={r["nearest"]: r["distance"], r["runner_up"]: r["runner_up_distance"]}))
            looks.append(look)
        labels = {(r["index"], tuple(r["box"])): r["label"] for rs in frames.values() for r in rs}
        per_frame, extra = pull(looks, rule)
        out[video] = {"source": next(iter(frames.values()))[0]["source"],
                      "names": decide(per_frame), "extra_frames": extra,
                      "faces": [{"label": labels[(f.frame, f.box)], **f.as_dict()}
                                for fs in per_frame for f in fs]}
    return out


def outcomes(replayed: dict[str, dict], expected: dict[str, str]) -> dict[str, Any]:
    """Counts over replayed videos: the person named first, a true match lost, the bystander named,
    videos that sampled extra frames."""
    videos = list(replayed.values())
    return {
        "videos": len(videos),
        "right_first": sum(v["names"][:1] == [expected[v["source"]]] for v in videos),
        "true_lost": sum(expected[v["source"]] not in v["names"] for v in videos),
        "bystander_named": sum(any(f["label"] == "bystander" and f["name"] != UNKNOWN_NAME
                                   for f in v["faces"]) for v in videos),
        "wrong_named": sum(any(f["name"] not in (expected[v["source"]], UNKNOWN_NAME)
                               for f in v["faces"]) for v in videos),
        "extra_frames_videos": sum(v["extra_frames"] > 0 for v in videos),
        "extra_frames_total": sum(v["extra_frames"] for v in videos),
    }


def main() -> int:
    parser = argparse.ArgumentParser(prog="bench.borderline")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--variants", type=int, default=100)
    parser.add_argument("--test5", type=int, default=60, help="re-encoded copies of test_5.mp4")
    parser.add_argument("--seed", type=int, default=14, help="of the test_5 copies")
    parser.add_argument("--sets", nargs="+", default=list(SETS), choices=SETS)
    parser.add_argument("--max-frames", type=int, default=8)
    parser.add_argument("--cache", type=Path, default=REPO / ".cache" / "bench")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "out" / "borderline.json")
    parser.add_argument("--replay", nargs="+", type=Path, metavar="JSON",
                        help="no measuring: replay the rule on these measurements and print the "
                             "outcomes (the function's defaults, or the options below)")
    parser.add_argument("--fraction", type=float, default=None)
    parser.add_argument("--frames", type=int, default=None)
    parser.add_argument("--agree", type=int, default=None)
    args = parser.parse_args()

    import structlog

    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
    if args.replay:
        return print_replay(args)
    from bench.variants import course_expectations, make_source_variants, make_variants
    from lambda_image.config import FunctionSettings
    from lambda_image.recognize import Recognizer

    recognizer = Recognizer.from_settings(FunctionSettings(gallery_path=args.data / "encoding"))
    expected = course_expectations(args.data)
    def test5(max_offset_s: float) -> list[tuple[Path, str, str]]:
        return [(v.path, v.source, v.expected_name)
                for v in make_source_variants(args.data, args.cache / "test5", BYSTANDER_CLIP,
                                              args.test5, seed=args.seed,
                                              max_offset_s=max_offset_s)]

    makers = {
        "course": lambda: [(args.data / "videos" / v, v, n) for v, n in sorted(expected.items())],
        "variants": lambda: [(v.path, v.source, v.expected_name) for v in make_variants(
            args.data, args.cache / "variants", args.variants)],
        # re-uploads started up to 0.1 s late (the boy is out of most frames after about 0.1 s)
        "test5_late": lambda: test5(0.1),
        # ... and from the very first frame, where he comes closest to the gallery
        "test5_first": lambda: test5(0.0),
    }
    sets = {name: makers[name]() for name in args.sets}
    result: dict = {"threshold": recognizer.matcher.threshold, "seed": args.seed, "sets": {}}
    for name, videos in sets.items():
        rows: list[FaceRow] = []
        for path, source, person in videos:
            rows += measure_video(recognizer, path, source, person, args.max_frames)
            print(f"{name}: {path.name}", file=sys.stderr)
        result["sets"][name] = {"videos": len(videos), "summary": summary(rows),
                                "faces": [asdict(r) for r in rows]}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: v["summary"] for k, v in result["sets"].items()}, indent=1))
    return 0

def print_replay(args: argparse.Namespace) -> int:
    from bench.variants import course_expectations
    from lambda_image import confirm
    from lambda_image.gallery import load_gallery
    from lambda_image.matching import Matcher

    expected = course_expectations(args.data)
    spacing = Matcher(load_gallery(args.data / "encoding")).spacing
    for path in args.replay:
        measured = json.loads(path.read_text())
        rules = {"one frame decides (the threshold alone)": confirm.ConfirmRule(
            measured["threshold"], fraction=float("inf"))}
        rules["the rule"] = confirm.ConfirmRule(
            measured["threshold"],
            fraction=confirm.DEFAULT_FRACTION if args.fraction is None else args.fraction,
            window=args.frames or confirm.DEFAULT_WINDOW, agree=args.agree or confirm.DEFAULT_AGREE)
        for name, part in measured["sets"].items():
            for label, rule in rules.items():
                counts = outcomes(replay(part["faces"], rule, spacing), expected)
                print(json.dumps({"file": path.name, "seed": measured.get("seed"), "set": name,
                                  "rule": label, "fraction": rule.fraction, **counts}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
