"""The recognition pipeline: a video (path or bytes) or one image → RecognitionResult."""

from __future__ import annotations

import math
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import structlog

from lambda_image import confirm
from lambda_image.config import FunctionSettings
from lambda_image.detection import Detection, FaceDetector
from lambda_image.embedders import Embedder, build_embedder
from lambda_image.gallery import Gallery, load_gallery
from lambda_image.images import DEFAULT_MAX_PIXELS, decode_image, still_frame
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
    runner_up: str = ""
    runner_up_distance: float = float("inf")
    #: how the name was decided (lambda_image.confirm: confident, confirmed, unconfirmed,
    #: above_threshold), and on which frames with which distances to `nearest` (None: face not found)
    decision: str = confirm.ABOVE_THRESHOLD
    #: the distance to `nearest` within which one frame names the face (ConfirmRule.bound)
    bound: float = float("inf")
    frames: tuple[int, ...] = ()
    distances: tuple[float | None, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        def num(value: float | None) -> float | None:
            return round(value, 4) if value is not None and math.isfinite(value) else None

        return {"name": self.name, "distance": round(self.distance, 4), "frame": self.frame,
                "box": list(self.box), "nearest": self.nearest, "runner_up": self.runner_up,
                "runner_up_distance": num(self.runner_up_distance), "bound": num(self.bound),
                "decision": self.decision,
                "frames": list(self.frames), "distances": [num(d) for d in self.distances]}

    def settled_by(self, verdict: confirm.Verdict) -> FaceResult:
        """This borderline face once the later frames have been heard."""
        named = verdict.decision == confirm.CONFIRMED
        return replace(self, name=self.nearest if named else UNKNOWN, decision=verdict.decision,
                       frames=verdict.frames, distances=verdict.distances)


@dataclass
class RecognitionResult:
    """People ordered most prominent first (`unknown_person` last); empty = no face found."""

    names: list[str]
    faces: list[FaceResult]
    frames_sampled: int
    embedder: str
    timings_ms: dict[str, float] = field(default_factory=dict)
    #: frames sampled only to confirm borderline faces (0: decided as before)
    extra_frames: int = 0


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
    a face that matched nobody (or was borderline and not confirmed): an unknown face in an
    earlier frame is most likely the same person turned away, later recognised.
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


@dataclass(frozen=True)
class Look:
    """One sampled frame, detected and identified: its faces as results and as the rule sees them
    (the same order)."""

    index: int
    faces: list[FaceResult]
    sightings: list[confirm.Sighting]


def pull(looks: Iterable[Look], rule: confirm.ConfirmRule) -> tuple[list[list[FaceResult]], int]:
    """Pull sampled frames until the answer is decided: (faces per frame, frames pulled only to
    judge borderline faces).

    The first frame with a match decides, as it always did, and sampling stops there, unless a
    face on it is borderline: then later frames are pulled, at most `rule.window - 1`, until each
    such face is confirmed or cannot be (lambda_image.confirm). Later frames are evidence only;
    their own faces are not reported.
    """
    per_frame: list[list[FaceResult]] = []
    deciding: Look | None = None
    pending: list[int] = []  # the deciding frame's borderline faces
    later: list[confirm.FrameFaces] = []

    def verdict(i: int) -> confirm.Verdict:
        assert deciding is not None
        face = deciding.faces[i]
        return confirm.confirm(deciding.sightings[i], face.frame, face.nearest, later, rule)

    for look in looks:
        if deciding is None:
            per_frame.append(list(look.faces))
            if any(f.decision != confirm.ABOVE_THRESHOLD for f in look.faces):
                deciding = look
                pending = [i for i, f in enumerate(look.faces) if f.decision == confirm.BORDERLINE]
                if not pending:
                    break  # a confident match: later frames would cost time and change nothing
        else:
            later.append(confirm.FrameFaces(look.index, tuple(look.sightings)))
            if all(verdict(i).settled for i in pending):
                break
    for i in pending:
        per_frame[-1][i] = per_frame[-1][i].settled_by(verdict(i))
    return per_frame, len(later)


#: The camera's frames before this one, most recent first, `count` at most
#: (lambda_image.camera_tracks): called only when a single frame holds a borderline face.
Lookback = Callable[[int], Sequence[confirm.FrameFaces]]


def look_back(look: Look, per_frame: list[list[FaceResult]], earlier: Lookback | None,
              rule: confirm.ConfirmRule) -> int:
    """Judge a single frame's borderline faces (left `unconfirmed` by `pull`, which had no later
    frame) on the camera's earlier frames instead, in place: the same rule, looking back.
    Returns how many earlier frames were read (0: none was needed, or none can be had)."""
    if earlier is None or len(per_frame) != 1:
        return 0
    faces = per_frame[0]
    pending = [i for i, f in enumerate(faces) if f.decision == confirm.UNCONFIRMED]
    if not pending:
        return 0
    frames = list(earlier(rule.window - 1))
    for i in pending:
        face = faces[i]
        faces[i] = face.settled_by(confirm.confirm(look.sightings[i], face.frame, face.nearest,
                                                   frames, rule))
    return len(frames)


def detector_from_settings(settings: FunctionSettings) -> FaceDetector:
    """MTCNN in *settings*' runtime: torch (threads set here) or onnx (the exported models)."""
    runtime = settings.inference_runtime
    model_dir = settings.require_model_dir() if runtime == "onnx" else None
    if runtime == "torch":
        import torch

        torch.set_num_threads(settings.inference_threads)
    return FaceDetector(min_face_px=settings.min_face_px, factor=settings.detect_factor,
                        runtime=runtime, model_dir=model_dir, threads=settings.inference_threads)


class Recognizer:
    """Detector + embedder + matcher, built once per process and reused for every video."""

    def __init__(self, gallery: Gallery, *, detector: FaceDetector, embedder: Embedder,
                 threshold: float | None = None, max_frames: int = 8,
                 max_decode_s: float = 2.0, detect_max_side: int = 400,
                 confirm_fraction: float = confirm.DEFAULT_FRACTION,
                 confirm_window: int = confirm.DEFAULT_WINDOW,
                 confirm_agree: int = confirm.DEFAULT_AGREE,
                 max_image_pixels: int = DEFAULT_MAX_PIXELS) -> None:
        if embedder.name != gallery.embedder:
            raise ValueError(f"{gallery.embedder} gallery needs the {gallery.embedder} embedder")
        self.gallery = gallery
        self.detector = detector
        self.embedder = embedder
        self.matcher = Matcher(gallery, threshold)
        self.rule = confirm.ConfirmRule(self.matcher.threshold, fraction=confirm_fraction,
                                        window=confirm_window, agree=confirm_agree)
        self.max_frames = max_frames
        self.max_decode_s = max_decode_s
        self.detect_max_side = detect_max_side
        self.max_image_pixels = max_image_pixels

    @classmethod
    def from_settings(cls, settings: FunctionSettings) -> Recognizer:
        """The models of *settings*' runtime: torch (threads set here) or onnx, which reads only
        the exported model directory and never imports torch."""
        runtime = settings.inference_runtime
        model_dir = settings.require_model_dir() if runtime == "onnx" else None
        gallery = load_gallery(settings.require_gallery())
        detector = detector_from_settings(settings)
        embedder = build_embedder(gallery.embedder, facenet_weights=settings.facenet_weights,
                                  dlib_encoder=settings.dlib_runner,
                                  cache_dir=settings.model_cache_dir, runtime=runtime,
                                  model_dir=model_dir, threads=settings.inference_threads)
        return cls(gallery, detector=detector, embedder=embedder,
                   threshold=settings.match_threshold, max_frames=settings.max_frames,
                   max_decode_s=settings.max_decode_seconds,
                   detect_max_side=settings.detect_max_side,
                   confirm_fraction=settings.confirm_fraction,
                   confirm_window=settings.confirm_frames, confirm_agree=settings.confirm_agree,
                   max_image_pixels=settings.max_image_pixels)

    def recognize(self, source: Path | str | bytes) -> RecognitionResult:
        """Sample frames until one yields a recognised face (or the caps are hit); a borderline
        face on that frame is judged on the next few sampled frames (lambda_image.confirm).

        Raises InvalidVideo for a file that is not a decodable video.
        """
        timer = Timer()
        started = time.perf_counter()
        frames = sample_frames(source, max_frames=self.max_frames, max_decode_s=self.max_decode_s,
                               detect_max_side=self.detect_max_side)
        return self._run(frames, timer, started)

    def recognize_image(self, data: bytes, *, index: int = 0,
                        earlier: Lookback | None = None) -> RecognitionResult:
        """One still image (the function-URL frame request): with no further frame, a borderline
        face is named only when *earlier* (the same camera's frames before this one, frame
        *index* of its stream) confirms it. Raises InvalidImage (ImageTooLarge)."""
        started = time.perf_counter()
        image = decode_image(data, max_pixels=self.max_image_pixels)
        timer = Timer()
        timer.ms["decode"] = (time.perf_counter() - started) * 1000.0
        frame = replace(still_frame(image, detect_max_side=self.detect_max_side), index=index)
        return self._run(iter([frame]), timer, started, earlier=earlier)

    def recognize_faces(self, faces: Sequence[tuple[np.ndarray, Detection, Detection]], *,
                        index: int = 0, earlier: Lookback | None = None) -> RecognitionResult:
        """Faces already detected on one frame, each as (its crop, the face in the crop's
        pixels, the face in the frame's): the second stage of the camera path. They are judged
        as `recognize_image` judges a frame's faces (*earlier* as there) and reported in frame
        pixels."""
        started = time.perf_counter()
        look = Look(index, [], [])
        for crop, in_crop, in_frame in faces:
            (match,) = self.matcher.match(self.embedder.embed(crop, [in_crop]))
            face, sighting = self._face_result(index, in_frame, match)
            look.faces.append(face)
            look.sightings.append(sighting)
        per_frame, extra = pull(iter([look]), self.rule)
        look_back(look, per_frame, earlier, self.rule)
        elapsed = (time.perf_counter() - started) * 1000.0
        return RecognitionResult(names=decide(per_frame), faces=per_frame[0],
                                 frames_sampled=1, embedder=self.embedder.name,
                                 timings_ms={"embed": round(elapsed, 2),
                                             "recognize": round(elapsed, 2)},
                                 extra_frames=extra)

    def _run(self, frames: Iterable[Frame], timer: Timer, started: float, *,
             earlier: Lookback | None = None) -> RecognitionResult:
        looks: list[Look] = []

        def kept(source: Iterable[Look]) -> Iterator[Look]:
            for look in source:
                looks.append(look)
                yield look

        per_frame, extra = pull(kept(self._looks(frames, timer)), self.rule)
        if looks:
            look_back(looks[0], per_frame, earlier, self.rule)
        timer.ms["recognize"] = (time.perf_counter() - started) * 1000.0
        faces = [f for frame_faces in per_frame for f in frame_faces]
        return RecognitionResult(names=decide(per_frame), faces=faces,
                                 frames_sampled=len(per_frame) + extra,
                                 embedder=self.embedder.name,
                                 timings_ms={k: round(v, 2) for k, v in timer.ms.items()},
                                 extra_frames=extra)

    def _looks(self, frames: Iterable[Frame], timer: Timer) -> Iterator[Look]:
        """Detect and identify each frame as it is pulled (the time between pulls not counted)."""
        t = time.perf_counter()
        for frame in frames:
            t = timer.add("decode", t)
            faces = self.detector.detect(frame.small, scale=frame.scale)
            t = timer.add("detect", t)
            look = self._identify(frame, faces) if faces else Look(frame.index, [], [])
            timer.add("embed", t)
            yield look
            t = time.perf_counter()

    def _identify(self, frame: Frame, faces: list[Detection]) -> Look:
        matches: list[Match] = self.matcher.match(self.embedder.embed(frame.rgb, faces))
        look = Look(frame.index, [], [])
        for f, m in zip(faces, matches, strict=True):
            face, sighting = self._face_result(frame.index, f, m)
            look.faces.append(face)
            look.sightings.append(sighting)
        return look

    def _face_result(self, index: int, f: Detection, m: Match,
                     ) -> tuple[FaceResult, confirm.Sighting]:
        """One face's first look: its result and what the borderline rule follows."""
        face = FaceResult(
            name=m.name, distance=m.distance, frame=index,
            box=tuple(round(v) for v in f.box), nearest=m.nearest, runner_up=m.runner_up,
            runner_up_distance=m.runner_up_distance,
            decision=confirm.first_look(m.distance, m.spacing, self.rule),
            bound=self.rule.bound(m.spacing),
            frames=(index,), distances=(m.distance,))
        return face, confirm.Sighting(box=f.box, identities=m.identities)
