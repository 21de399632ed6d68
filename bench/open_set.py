"""Calibrate the rule that decides one face (lambda_image.confirm): every face's distance to every
gallery identity, measured on enrolled and unenrolled faces, and for each candidate rule what it
would answer on a single frame.

    .venv/bin/python -m bench.open_set --out bench/out/open_set.json      # measure (~12 min)
    .venv/bin/python -m bench.open_set --table bench/out/open_set.json    # the docs' table

Enrolled faces (the person named in the course's expected.csv, the largest face): every frame
the video path samples from the 8 course clips, as decoded and as a JPEG; tight crops of those
faces (64, 96 and 160 px square); the first 3 sampled frames of bench/variants.py's 100 variants
and of re-encoded first-frame copies of test_5 (vin_diesel) and test_6 (floki, the course's
closest match); the face_recognition photos of president_obama and president_biden, each with
crops, scales, brightness and JPEG qualities. Unenrolled faces: test_5's boy on the same frames
(the bystander, right of vin_diesel), and the photos of people in no gallery (grace_hopper,
astronaut, tom_hanks and the six in insightface's group photo), each as photos so varied and as
a clip rendered from the photo.

A `--holdout-seed` measures a second, fresh set of test_5/test_6 copies that the rule was not
chosen on, reported beside the calibration figures.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import random
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("OMP_NUM_THREADS", "1")

DEFAULT_DATA = Path(os.environ.get("SHARED_DATA", REPO.parent / "shared" / "data")) / "cse546-2023"
BYSTANDER_CLIP = "test_5.mp4"
#: the enrolled people among the sample photos, by photo name
ENROLLED_PHOTOS = {"obama": "president_obama", "obama2": "president_obama",
                   "obama3": "president_obama", "biden": "president_biden"}
STRANGER_PHOTOS = ("grace_hopper", "astronaut", "tom_hanks", "group")
CROP_SIDES = (64, 96, 160)
PHOTO_VARIANTS = 12


@dataclass
class Face:
    set: str  # where it comes from (course_frames, course_jpeg, crops, variants, copies, ...)
    source: str  # the clip or photo
    person: str  # the enrolled identity it is; "" for a face of someone in no gallery
    who: str  # the person, enrolled or not (bystander, grace_hopper, group:2, ...)
    identities: dict[str, float]  # every gallery identity's distance


# -- measuring --------------------------------------------------------------------------------

def faces_on(recognizer, frame) -> list[tuple[tuple[float, ...], dict[str, float]]]:
    """(box, every identity's distance) per face, largest first."""
    detections = recognizer.detector.detect(frame.small, scale=frame.scale)
    if not detections:
        return []
    matches = recognizer.matcher.match(recognizer.embedder.embed(frame.rgb, detections))
    found = [(tuple(float(v) for v in d.box), dict(m.identities))
             for d, m in zip(detections, matches, strict=True)]
    return sorted(found, key=lambda f: -(f[0][2] - f[0][0]) * (f[0][3] - f[0][1]))


def labelled(found: list[tuple[tuple[float, ...], dict[str, float]]], width: int, source: str,
             name: str, person: str, set_name: str) -> Iterator[Face]:
    """The clip's person (the largest face) and, in test_5, the boy right of the middle; any
    other face is nobody we can label."""
    for i, (box, ids) in enumerate(found):
        if source == BYSTANDER_CLIP and (box[0] + box[2]) / 2 > width / 2:
            yield Face(set_name, name, "", "bystander", ids)
        elif i == 0:
            yield Face(set_name, name, person, person, ids)


def clip_faces(recognizer, path: Path, source: str, person: str, set_name: str,
               max_frames: int) -> Iterator[Face]:
    from lambda_image.video import sample_frames

    for frame in sample_frames(path, max_frames=max_frames, max_decode_s=60.0,
                               detect_max_side=recognizer.detect_max_side):
        yield from labelled(faces_on(recognizer, frame), frame.rgb.shape[1], source, path.name,
                            person, set_name)


def jpeg(image, quality: int = 90) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def still_faces(recognizer, data: bytes) -> list[tuple[tuple[float, ...], dict[str, float]]]:
    from lambda_image.images import decode_image, still_frame

    frame = still_frame(decode_image(data), detect_max_side=recognizer.detect_max_side)
    return faces_on(recognizer, frame)


def course_sets(recognizer, data: Path, expected: dict[str, str]) -> Iterator[Face]:
    """Every sampled frame of the course clips: decoded, as a JPEG, and its face cropped tight."""
    from PIL import Image

    from lambda_image.video import sample_frames

    for clip, person in sorted(expected.items()):
        for frame in sample_frames(data / "videos" / clip, max_frames=8, max_decode_s=60.0,
                                   detect_max_side=recognizer.detect_max_side):
            width = frame.rgb.shape[1]
            yield from labelled(faces_on(recognizer, frame), width, clip, clip, person,
                                "course_frames")
            image = Image.fromarray(frame.rgb)
            found = still_faces(recognizer, jpeg(image))
            yield from labelled(found, width, clip, clip, person, "course_jpeg")
            if not found:
                continue
            x1, y1, x2, y2 = found[0][0]
            side = max(x2 - x1, y2 - y1) * 1.1  # tight: the face and a little around it
            cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
            crop = image.crop((round(cx - side / 2), round(cy - side / 2),
                               round(cx + side / 2), round(cy + side / 2)))
            for px in CROP_SIDES:
                tight = crop.resize((px, px), Image.Resampling.LANCZOS)
                for _, ids in still_faces(recognizer, jpeg(tight))[:1]:
                    yield Face(f"crops_{px}", clip, person, person, ids)


def varied_photos(path: Path, rng: random.Random, count: int) -> Iterator[bytes]:
    """The photo itself, then crops (80-100 %), scales (×0.5-1.5), brightness (±25 %) and JPEG
    qualities (60-95)."""
    from PIL import Image, ImageEnhance

    with Image.open(path) as opened:
        image = opened.convert("RGB")
    yield jpeg(image, 95)
    for _ in range(count - 1):
        w, h = image.size
        c = rng.uniform(0.8, 1.0)
        left, top = int((w - w * c) * rng.random()), int((h - h * c) * rng.random())
        out = image.crop((left, top, left + int(w * c), top + int(h * c)))
        scale = rng.choice((0.5, 0.75, 1.0, 1.5))
        out = out.resize((max(32, int(out.width * scale)), max(32, int(out.height * scale))),
                         Image.Resampling.LANCZOS)
        out = ImageEnhance.Brightness(out).enhance(rng.uniform(0.75, 1.25))
        yield jpeg(out, rng.choice((60, 80, 95)))


def photo_sets(recognizer, photos: dict[str, Path], clips_dir: Path) -> Iterator[Face]:
    from sampledata.render import render_still_clip

    rng = random.Random(546)
    for name in (*ENROLLED_PHOTOS, *STRANGER_PHOTOS):
        person = ENROLLED_PHOTOS.get(name, "")
        for data in varied_photos(photos[name], rng, PHOTO_VARIANTS):
            for i, (_, ids) in enumerate(still_faces(recognizer, data)):
                if person and i:
                    continue  # an enrolled photo's other faces are nobody we know
                who = person or (f"{name}:{i}" if name == "group" else name)
                yield Face("photos" if person else "strangers", name, person, who, ids)
        if person:
            continue
        clips_dir.mkdir(parents=True, exist_ok=True)
        for size in ((640, 480), (1280, 720)):
            clip = clips_dir / f"{name}_{size[0]}x{size[1]}.mp4"
            if not clip.exists():
                render_still_clip(clip, [photos[name]], size=size)
            for face in clip_faces(recognizer, clip, clip.name, "", "stranger_clips", 3):
                face.who = name
                yield face


def copies(recognizer, data: Path, cache: Path, count: int, seed: int,
           set_name: str) -> Iterator[Face]:
    from bench.variants import make_source_variants

    for clip in (BYSTANDER_CLIP, "test_6.mp4"):
        for v in make_source_variants(data, cache / "copies", clip, count, seed=seed,
                                      max_offset_s=0.0):
            yield from clip_faces(recognizer, v.path, clip, v.expected_name, set_name, 3)


def measure(args: argparse.Namespace) -> int:
    from bench.variants import course_expectations, make_variants
    from lambda_image.config import FunctionSettings
    from lambda_image.recognize import Recognizer
    from sampledata.photos import fetch_photos

    recognizer = Recognizer.from_settings(FunctionSettings(gallery_path=args.data / "encoding"))
    expected = course_expectations(args.data)
    variants = make_variants(args.data, args.cache / "variants", args.variants)

    def variant_faces() -> Iterator[Face]:
        for v in variants:
            yield from clip_faces(recognizer, v.path, v.source, v.expected_name, "variants", 3)

    parts: dict[str, Callable[[], Iterable[Face]]] = {
        "course": lambda: course_sets(recognizer, args.data, expected),
        "variants": variant_faces,
        "copies": lambda: copies(recognizer, args.data, args.cache, args.copies, args.seed,
                                 "copies"),
        "photos": lambda: photo_sets(recognizer, fetch_photos(), args.cache / "stranger_clips"),
        "holdout": lambda: copies(recognizer, args.data, args.cache, args.copies,
                                  args.holdout_seed, "holdout"),
    }
    faces: list[Face] = []
    for name, make in parts.items():
        before = len(faces)
        faces += make()
        print(f"{name}: {len(faces) - before} faces", file=sys.stderr)
    result = {"threshold": recognizer.matcher.threshold, "spacing": recognizer.matcher.spacing,
              "seed": args.seed, "holdout_seed": args.holdout_seed,
              "faces": [asdict(f) for f in faces]}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result) + "\n")
    print(f"{len(faces)} faces -> {args.out}", file=sys.stderr)
    return 0


# -- the candidate rules ----------------------------------------------------------------------

@dataclass(frozen=True)
class Evidence:
    """What one face offers a rule: the nearest identity, the runner-up and the gallery."""

    nearest: str
    d1: float
    d2: float  # the runner-up identity's distance
    others_mean: float  # of every identity's distance but the nearest
    others_sd: float
    spacing: float  # the nearest identity's distance to its nearest other identity

    @classmethod
    def of(cls, identities: dict[str, float], spacing: dict[str, float]) -> Evidence:
        ranked = sorted(identities.items(), key=lambda kv: kv[1])
        others = [d for _, d in ranked[1:]]
        mean = sum(others) / len(others)
        sd = math.sqrt(sum((d - mean) ** 2 for d in others) / len(others))
        return cls(ranked[0][0], ranked[0][1], ranked[1][1], mean, sd, spacing[ranked[0][0]])


@dataclass(frozen=True)
class Candidate:
    """A rule family: named when `accepts(evidence, parameter)` (and within the threshold)."""

    name: str
    parameter: str
    grid: tuple[float, ...]
    accepts: Callable[[Evidence, float], bool]
    #: larger parameters accept more faces (the sweep keeps the largest with no wrong name)
    loosens_upward: bool = True


def grid(lo: float, hi: float, step: float) -> tuple[float, ...]:
    return tuple(round(lo + i * step, 4) for i in range(round((hi - lo) / step) + 1))


def candidates(threshold: float) -> list[Candidate]:
    return [
        Candidate("distance alone (a lower threshold)", "threshold", grid(0.40, threshold, 0.005),
                  lambda e, t: e.d1 <= t),
        Candidate("margin to the runner-up", "runner-up at least this further",
                  grid(0.0, 0.30, 0.005), lambda e, m: e.d2 - e.d1 >= m, loosens_upward=False),
        Candidate("ratio test (nearest ÷ runner-up)", "ratio at most", grid(0.50, 1.0, 0.005),
                  lambda e, r: e.d1 / e.d2 <= r),
        Candidate("cohort score ((mean of the others − nearest) ÷ their sd)", "score at least",
                  grid(1.0, 10.0, 0.05), lambda e, z: (e.others_mean - e.d1) / e.others_sd >= z,
                  loosens_upward=False),
        Candidate("per-identity bound from the gallery's spacing", "fraction of the spacing",
                  grid(0.60, 1.0, 0.005), lambda e, k: e.d1 <= k * e.spacing),
    ]


def outcome(face: dict, evidence: Evidence, named: bool) -> str:
    if not named:
        return "unknown"
    return "correct" if face["person"] and evidence.nearest == face["person"] else "wrong"


def tally(faces: list[dict], evidence: list[Evidence], named: Callable[[Evidence], bool]) -> dict:
    counts = {"enrolled": {"correct": 0, "unknown": 0, "wrong": 0},
              "unenrolled": {"unknown": 0, "wrong": 0}}
    for face, e in zip(faces, evidence, strict=True):
        side = counts["enrolled" if face["person"] else "unenrolled"]
        side[outcome(face, e, named(e))] += 1
    return counts


def wrong(counts: dict) -> int:
    return counts["enrolled"]["wrong"] + counts["unenrolled"]["wrong"]


def sweep(candidate: Candidate, faces: list[dict], evidence: list[Evidence],
          threshold: float) -> tuple[float | None, dict]:
    """The loosest parameter with no wrong name (None: even the strictest names someone
    wrongly), and its counts."""
    order = candidate.grid if candidate.loosens_upward else tuple(reversed(candidate.grid))
    best: tuple[float | None, dict] = (None, {})
    for value in order:
        counts = tally(faces, evidence,
                       lambda e, v=value: e.d1 <= threshold and candidate.accepts(e, v))
        if wrong(counts):
            break
        best = (value, counts)
    return best


def shipped_rule(threshold: float, fraction: float | None = None) -> Callable[[Evidence], bool]:
    """lambda_image.confirm as the function runs it: what one frame names at once."""
    from lambda_image import confirm

    rule = confirm.ConfirmRule(threshold, **({} if fraction is None else {"fraction": fraction}))
    return lambda e: confirm.first_look(e.d1, e.spacing, rule) == confirm.CONFIDENT


def table(path: Path) -> int:
    measured = json.loads(path.read_text())
    threshold, spacing = measured["threshold"], measured["spacing"]
    faces = [f for f in measured["faces"] if f["set"] != "holdout"]
    holdout = [f for f in measured["faces"] if f["set"] == "holdout"]
    evidence = [Evidence.of(f["identities"], spacing) for f in faces]
    held = [Evidence.of(f["identities"], spacing) for f in holdout]
    enrolled = sum(bool(f["person"]) for f in faces)
    print(f"{len(faces)} faces ({enrolled} enrolled, {len(faces) - enrolled} unenrolled) "
          f"from {len({f['source'] for f in faces})} clips and photos; threshold {threshold}; "
          f"holdout {len(holdout)} faces (seed {measured['holdout_seed']})\n")
    print("| rule (one frame decides) | parameter | enrolled: correct / unknown_person / wrong "
          "| unenrolled: unknown_person / wrong | holdout: enrolled correct / unknown, "
          "unenrolled wrong |")
    print("|---|---|---|---|---|")

    def row(name: str, parameter: str, named: Callable[[Evidence], bool]) -> None:
        c = tally(faces, evidence, named)
        h = tally(holdout, held, named)
        e, u, he = c["enrolled"], c["unenrolled"], h["enrolled"]
        print(f"| {name} | {parameter} | {e['correct']} / {e['unknown']} / {e['wrong']} "
              f"| {u['unknown']} / {u['wrong']} | {he['correct']} / {he['unknown']}, "
              f"{h['unenrolled']['wrong']} |")

    row("the threshold alone (before any rule)", f"{threshold}", lambda e: e.d1 <= threshold)
    # issue 14's rule, as one frame applied it: confident below threshold - 0.15 T, or in that
    # band with the runner-up 0.30 T further
    row("the rule before (a band below the threshold, a runner-up margin in it)",
        "band 0.15 T, margin 0.30 T", lambda e: e.d1 <= 0.85 * threshold or (
            e.d1 <= threshold and e.d2 - e.d1 >= 0.30 * threshold))
    for candidate in candidates(threshold):
        value, _ = sweep(candidate, faces, evidence, threshold)
        if value is None:
            print(f"| {candidate.name} | none without a wrong name | | | |")
            continue
        row(candidate.name, f"{candidate.parameter} {value}",
            lambda e, c=candidate, v=value: e.d1 <= threshold and c.accepts(e, v))
    from lambda_image import confirm

    row("**the shipped rule** (lambda_image.confirm)",
        f"fraction of the spacing {confirm.DEFAULT_FRACTION}", shipped_rule(threshold))

    # how wide the gap the shipped rule sits in is: the loosest enrolled face it must name and
    # the tightest unenrolled one it must not, as fractions of the identity's spacing
    def fractions(person: bool) -> list[float]:
        return sorted(e.d1 / e.spacing for f, e in zip(faces, evidence, strict=True)
                      if bool(f["person"]) == person and e.d1 <= threshold
                      and (not person or e.nearest == f["person"]))
    print(f"\nd ÷ spacing within the threshold: enrolled at most {fractions(True)[-1]:.3f}, "
          f"unenrolled at least {fractions(False)[0]:.3f}")
    named = shipped_rule(threshold)
    print("\n| set | enrolled: correct / unknown_person / wrong | unenrolled: unknown_person / "
          "wrong |\n|---|---|---|")
    for name in dict.fromkeys(f["set"] for f in measured["faces"]):
        part = [(f, e) for f, e in zip(faces + holdout, evidence + held, strict=True)
                if f["set"] == name]
        c = tally([f for f, _ in part], [e for _, e in part], named)
        e, u = c["enrolled"], c["unenrolled"]
        print(f"| {name} | {e['correct']} / {e['unknown']} / {e['wrong']} | "
              f"{u['unknown']} / {u['wrong']} |")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(prog="bench.open_set")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--variants", type=int, default=100)
    parser.add_argument("--copies", type=int, default=60, help="of test_5 and of test_6 each")
    parser.add_argument("--seed", type=int, default=14)
    parser.add_argument("--holdout-seed", type=int, default=15)
    parser.add_argument("--cache", type=Path, default=REPO / ".cache" / "bench")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "out" / "open_set.json")
    parser.add_argument("--table", type=Path, metavar="JSON",
                        help="no measuring: print the candidate rules' table for these faces")
    args = parser.parse_args()
    if args.table:
        return table(args.table)
    import structlog

    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
    return measure(args)


if __name__ == "__main__":
    raise SystemExit(main())
