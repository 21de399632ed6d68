"""Distinct course-like clips: the course videos re-encoded with crops, scaling, brightness and
start offsets, so that no cache keyed on bytes or frames can short-cut the work."""

from __future__ import annotations

import csv
import random
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image, ImageEnhance

SIZES = ((640, 360), (854, 480), (1280, 720))
#: The sizes of the single-clip variants (make_source_variants): smaller and larger than SIZES too.
SOURCE_SIZES = ((480, 270), (640, 360), (854, 480), (960, 540), (1280, 720), (1920, 1080))


@dataclass(frozen=True)
class Variant:
    path: Path
    source: str
    expected_name: str


def course_expectations(course_dir: Path) -> dict[str, str]:
    """video file name -> expected student name, from the course's expected.csv."""
    with (course_dir / "expected.csv").open(newline="") as handle:
        return {row["video"]: row["name"] for row in csv.DictReader(handle)}


def make_variants(course_dir: Path, out_dir: Path, count: int, *, seed: int = 546,
                  seconds: float = 1.0) -> list[Variant]:
    """Write *count* variants (cached by file name) and return them with their expected names."""
    expected = course_expectations(course_dir)
    sources = sorted(expected)
    rng = random.Random(seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    variants = []
    for index in range(count):
        source = sources[index % len(sources)]
        params = {"crop": rng.uniform(0.85, 1.0), "dx": rng.random(), "dy": rng.random(),
                  "size": rng.choice(SIZES), "brightness": rng.uniform(0.8, 1.2),
                  "offset": rng.uniform(0.0, 0.4)}
        path = out_dir / f"v{index:03d}_{Path(source).stem}.mp4"
        if not path.exists():
            _render_variant(course_dir / "videos" / source, path, seconds=seconds, **params)
        variants.append(Variant(path, source, expected[source]))
    return variants


def make_source_variants(course_dir: Path, out_dir: Path, source: str, count: int, *,
                         seed: int = 14, sizes: tuple[tuple[int, int], ...] = SOURCE_SIZES,
                         max_offset_s: float = 0.4, seconds: float = 1.0,
                         indices: Sequence[int] | None = None) -> list[Variant]:
    """*count* re-encoded copies of one course clip, cycling through *sizes*, each with its own
    random crop (85-100 %), brightness (±20 %) and start offset (up to *max_offset_s*; 0 keeps the
    first frame), as a phone re-upload would be (cached by name). *indices* renders only those
    of the *count* (each copy's parameters do not depend on which others are rendered)."""
    expected = course_expectations(course_dir)
    rng = random.Random(f"{seed}:{source}")
    out_dir.mkdir(parents=True, exist_ok=True)
    wanted = set(range(count) if indices is None else indices)
    variants = []
    for index in range(count):
        size = sizes[index % len(sizes)]
        params = {"crop": rng.uniform(0.85, 1.0), "dx": rng.random(), "dy": rng.random(),
                  "brightness": rng.uniform(0.8, 1.2), "offset": rng.uniform(0.0, max_offset_s)}
        if index not in wanted:
            continue
        path = out_dir / (f"{Path(source).stem}_s{seed}_o{round(max_offset_s * 1000)}_{index:03d}_"
                          f"{size[0]}x{size[1]}.mp4")
        if not path.exists():
            _render_variant(course_dir / "videos" / source, path, size=size, seconds=seconds,
                            **params)
        variants.append(Variant(path, source, expected[source]))
    return variants


def _render_variant(src: Path, out: Path, *, crop: float, dx: float, dy: float,
                    size: tuple[int, int], brightness: float, offset: float,
                    seconds: float) -> None:
    tmp = out.with_name(out.name + ".part.mp4")
    with av.open(str(src)) as inp, av.open(str(tmp), mode="w") as outp:
        in_stream = inp.streams.video[0]
        in_stream.thread_type = "AUTO"
        fps = round(float(in_stream.average_rate or 24))
        stream = outp.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
        stream.options = {"preset": "veryfast"}
        written = 0
        frames_wanted = max(1, int(seconds * fps))
        for frame in inp.decode(in_stream):
            if frame.time is not None and frame.time < offset:
                continue
            img = frame.to_image()
            w, h = img.size
            cw, ch = int(w * crop), int(h * crop)
            left, top = int((w - cw) * dx), int((h - ch) * dy)
            img = img.crop((left, top, left + cw, top + ch)).resize(
                size, Image.Resampling.BOX)
            img = ImageEnhance.Brightness(img).enhance(brightness)
            out_frame = av.VideoFrame.from_ndarray(np.asarray(img), format="rgb24")
            out_frame.pts, out_frame.time_base = written, Fraction(1, fps)
            for packet in stream.encode(out_frame):
                outp.mux(packet)
            written += 1
            if written >= frames_wanted:
                break
        for packet in stream.encode(None):
            outp.mux(packet)
    tmp.replace(out)


def make_scaled(course_dir: Path, out_dir: Path, size: tuple[int, int], *,
                seconds: float = 1.0) -> list[Variant]:
    """Every course clip scaled (whole frame, no other change) to *size*: cached by name."""
    expected = course_expectations(course_dir)
    out = out_dir / f"{size[0]}x{size[1]}"
    out.mkdir(parents=True, exist_ok=True)
    variants = []
    for source in sorted(expected):
        path = out / source
        if not path.exists():
            _render_variant(course_dir / "videos" / source, path, crop=1.0, dx=0.0, dy=0.0,
                            size=size, brightness=1.0, offset=0.0, seconds=seconds)
        variants.append(Variant(path, source, expected[source]))
    return variants
