"""The recognition pipeline: a video (path or bytes) or one image → RecognitionResult."""

from __future__ import annotations

import io
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import structlog
from PIL import Image, UnidentifiedImageError

from lambda_image.config import FunctionSettings
from lambda_image.detection import Detection, FaceDetector
from lambda_image.embedders import Embedder, build_embedder
from lambda_image.errors import InvalidImage
from lambda_image.gallery import Gallery, load_gallery
from lambda_image.matching import UNKNOWN, Match, Matcher
from lambda_image.video import Frame, sample_frames

log = structlog.get_logger()


@dataclass(frozen=True)
class FaceResult:
    name: str
    distance: float
    frame: int
    box: tuple[int, int, int, int]
    nearest: str

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "distance": round(self.distance, 4), "frame": self.frame,
                "box": list(self.box)}


@dataclass
class RecognitionResult:
    """People ordered most prominent first (`unknown_person` last); empty = no face found."""

    names: list[str]
    faces: list[FaceResult]
    frames_sampled: int
    embedder: str
    timings_ms: dict[str, float] = field(default_factory=dict)


class Timer:
    """Accumulates wall time per stage in milliseconds."""

    def __init__(self) -> None:
        self.ms: dict[str, float] = defaultdict(float)

    def add(self, stage: str, started: float) -> float:
        now = time.perf_counter()
        self.ms[stage] += (now - started) * 1000.0
        return now


def decide(frames: list[list[FaceResult]]) -> list[str]:
    """Vote across sampled frames: each known name once, most frames first, then larger faces.

    `unknown_person` is added when nothing was recognised, or when the deciding (last) frame holds
    a face that matched nobody: an unknown face in an earlier frame is most likely the same person
    turned away, later recognised.
    """
    votes: dict[str, int] = defaultdict(int)
    size: dict[str, float] = defaultdict(float)
    for faces in frames:
        for face in {f.name: f for f in faces if f.name != UNKNOWN}.values():
            votes[face.name] += 1
        for face in faces:
            if face.name != UNKNOWN:
                x1, y1, x2, y2 = face.box
                size[face.name] += (x2 - x1) * (y2 - y1)
    names = sorted(votes, key=lambda n: (-votes[n], -size[n], n))
    any_face = any(frames)
    last = next((faces for faces in reversed(frames) if faces), [])
    if any_face and (not names or any(f.name == UNKNOWN for f in last)):
        names.append(UNKNOWN)
    return names


class Recognizer:
    """Detector + embedder + matcher, built once per process and reused for every video."""

    def __init__(self, gallery: Gallery, *, detector: FaceDetector, embedder: Embedder,
                 threshold: float | None = None, max_frames: int = 8,
                 max_decode_s: float = 2.0, detect_max_side: int = 400) -> None:
        if embedder.name != gallery.embedder:
            raise ValueError(f"{gallery.embedder} gallery needs the {gallery.embedder} embedder")
        self.gallery = gallery
        self.detector = detector
        self.embedder = embedder
        self.matcher = Matcher(gallery, threshold)
        self.max_frames = max_frames
        self.max_decode_s = max_decode_s
        self.detect_max_side = detect_max_side

    @classmethod
    def from_settings(cls, settings: FunctionSettings) -> Recognizer:
        import torch

        torch.set_num_threads(settings.torch_num_threads)
        gallery = load_gallery(settings.require_gallery())
        return cls(gallery, detector=FaceDetector(min_face_px=settings.min_face_px,
                                                      factor=settings.detect_factor),
                   embedder=build_embedder(gallery.embedder,
                                           facenet_weights=settings.facenet_weights,
                                           dlib_encoder=settings.dlib_encoder,
                                           cache_dir=settings.model_cache_dir),
                   threshold=settings.match_threshold, max_frames=settings.max_frames,
                   max_decode_s=settings.max_decode_seconds,
                   detect_max_side=settings.detect_max_side)

    def recognize(self, source: Path | str | bytes) -> RecognitionResult:
        """Sample frames until one yields a recognised face (or the caps are hit).

        Raises InvalidVideo for a file that is not a decodable video.
        """
        timer = Timer()
        started = time.perf_counter()
        frames = sample_frames(source, max_frames=self.max_frames, max_decode_s=self.max_decode_s,
                               detect_max_side=self.detect_max_side)
        return self._run(frames, timer, started)

    def recognize_image(self, data: bytes) -> RecognitionResult:
        """One still image (the function-URL frame request). Raises InvalidImage."""
        timer = Timer()
        started = time.perf_counter()
        try:
            with Image.open(io.BytesIO(data)) as im:
                image = im.convert("RGB")
        except (UnidentifiedImageError, OSError, ValueError) as exc:
            raise InvalidImage(f"not a decodable image: {exc}") from exc
        rgb = np.ascontiguousarray(np.asarray(image))
        scale = min(1.0, self.detect_max_side / max(image.size))
        small = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))),
                             Image.BOX) if scale < 1.0 else image
        frame = Frame(index=0, time_s=0.0, rgb=rgb, small=small, scale=scale)
        return self._run(iter([frame]), timer, started)

    def _run(self, frames: Iterable[Frame], timer: Timer, started: float) -> RecognitionResult:
        per_frame: list[list[FaceResult]] = []
        t = time.perf_counter()
        for frame in frames:
            t = timer.add("decode", t)
            faces = self.detector.detect(frame.small, scale=frame.scale)
            t = timer.add("detect", t)
            results = self._identify(frame, faces) if faces else []
            t = timer.add("embed", t)
            per_frame.append(results)
            if any(r.name != UNKNOWN for r in results):
                break  # a confident match: later frames would cost time and change nothing
            t = time.perf_counter()
        timer.ms["recognize"] = (time.perf_counter() - started) * 1000.0
        faces = [f for frame_faces in per_frame for f in frame_faces]
        return RecognitionResult(names=decide(per_frame), faces=faces,
                                 frames_sampled=len(per_frame), embedder=self.embedder.name,
                                 timings_ms={k: round(v, 2) for k, v in timer.ms.items()})

    def _identify(self, frame: Frame, faces: list[Detection]) -> list[FaceResult]:
        matches: list[Match] = self.matcher.match(self.embedder.embed(frame.rgb, faces))
        return [FaceResult(name=m.name, distance=m.distance, frame=frame.index,
                           box=tuple(round(v) for v in f.box), nearest=m.nearest)
                for f, m in zip(faces, matches, strict=True)]
