"""The decision rule: when one face is named at once, when it needs more frames, and when it is
`unknown_person` (docs/decision-rule.md; the figures are measured by bench/open_set.py).

A wrong name is worse than `unknown_person`. One face's distance to its nearest identity says too
little on its own: test_5's unenrolled boy comes within 0.54 of president_trump while floki, an
enrolled student, matches at 0.57. What separates them is how that distance compares with the
gallery's own spread: president_trump's nearest other identity (president_biden) is 0.646 from
him, floki's 0.761. A face is evidence for an identity only when it lies well inside the distance
at which that identity's neighbour already lies, so:

* `confident`: the best distance is at most `fraction` × the identity's spacing (its distance to
  the nearest other identity in the gallery, lambda_image.matching.spacing), and within the
  threshold: named at once, on its one frame;
* `above_threshold`: above the threshold: `unknown_person`;
* otherwise the face is borderline: tracked by box overlap over the next sampled frames (its own
  frame plus `window - 1` more, the track ending where the face is not found) and named only when
  `agree` of those frames put the same identity nearest and within the threshold (`confirmed`);
  else, or on a single frame with nothing before it, `unknown_person` (`unconfirmed`).

Everything here is pure: the recognizer feeds it distances and boxes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

Box = tuple[float, float, float, float]  # x1, y1, x2, y2

CONFIDENT = "confident"
CONFIRMED = "confirmed"
UNCONFIRMED = "unconfirmed"
ABOVE_THRESHOLD = "above_threshold"
#: a first look only, settled by `confirm` into CONFIRMED or UNCONFIRMED
BORDERLINE = "borderline"

#: Chosen by bench/open_set.py (docs/decision-rule.md): of 1,162 calibration faces, every
#: enrolled one within the threshold and nearest its own identity lies at most 0.798 of that
#: identity's spacing from it, and no unenrolled one nearer than 0.814 (a stranger in insightface's
#: group photo, 0.549 from johnny_dep). 0.80 names the former and keeps the wider cushion to the
#: latter: a wrong name is worse than `unknown_person`.
DEFAULT_FRACTION = 0.80
DEFAULT_WINDOW = 3
DEFAULT_AGREE = 2
#: Box overlap (intersection over union) that makes a face on a later sampled frame the same face.
DEFAULT_MIN_IOU = 0.3
#: A camera's earlier frame showing the face in nearly the same place (IoU at least this) at nearly
#: the same distance (within this) is the same look again, not a second one (`same_look`). Chosen
#: from bench/camera_streams.py: of 172 borderline true matches agreeing with their camera's frame
#: before (the course clips, 100 variants, 100 test_5 copies), none overlapped it by more than
#: 0.77; test_5's unenrolled boy, at 0.581 and 0.583 from president_trump on two frames of one
#: copy, overlapped by 0.86.
SAME_LOOK_IOU = 0.85
SAME_LOOK_DISTANCE = 0.01


@dataclass(frozen=True)
class ConfirmRule:
    """The rule's numbers: the threshold in distance units of one embedder, the rest unitless."""

    threshold: float
    #: a face is confident within this fraction of its identity's spacing (inf: the threshold
    #: alone decides, one frame naming every face within it: the rule off)
    fraction: float = DEFAULT_FRACTION
    window: int = DEFAULT_WINDOW  # frames a borderline face is judged on, its own included
    agree: int = DEFAULT_AGREE  # of which this many must agree
    min_iou: float = DEFAULT_MIN_IOU

    def __post_init__(self) -> None:
        if not self.threshold > 0:
            raise ValueError(f"threshold {self.threshold} must be positive")
        if not self.fraction > 0:
            raise ValueError(f"fraction {self.fraction} must be positive")
        if not 1 <= self.agree <= self.window:
            raise ValueError(f"agree {self.agree} must lie in [1, window {self.window}]")
        if not 0 < self.min_iou <= 1:
            raise ValueError(f"min_iou {self.min_iou} must lie in (0, 1]")

    def bound(self, spacing: float) -> float:
        """The distance within which a face of an identity this far from its nearest neighbour
        is named at once."""
        if math.isinf(self.fraction) or math.isinf(spacing):
            return self.threshold
        return min(self.threshold, self.fraction * spacing)


def first_look(distance: float, spacing: float, rule: ConfirmRule) -> str:
    """One frame's verdict on a face at *distance* from its nearest identity, whose spacing is
    *spacing*: ABOVE_THRESHOLD, CONFIDENT or BORDERLINE (needs frames)."""
    if distance > rule.threshold:
        return ABOVE_THRESHOLD
    if distance <= rule.bound(spacing):
        return CONFIDENT
    return BORDERLINE


def iou(a: Box, b: Box) -> float:
    """Intersection over union of two boxes (0 for disjoint or degenerate boxes)."""
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    if w <= 0 or h <= 0:
        return 0.0
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


@dataclass(frozen=True)
class Sighting:
    """One face on one sampled frame, as the rule sees it."""

    box: Box
    identities: Mapping[str, float]  # every gallery identity's distance

    def nearest(self) -> str:
        return min(self.identities, key=self.identities.__getitem__) if self.identities else ""


@dataclass(frozen=True)
class FrameFaces:
    """Every face on one later sampled frame (an empty tuple: no face there)."""

    index: int
    faces: tuple[Sighting, ...]


def follow(box: Box, faces: Sequence[Sighting], min_iou: float) -> Sighting | None:
    """The face on a later frame that overlaps `box` most, if by at least `min_iou`."""
    best, best_iou = None, min_iou
    for face in faces:
        overlap = iou(box, face.box)
        if overlap >= best_iou:
            best, best_iou = face, overlap
    return best


def same_look(earlier: Sighting, now: Sighting, candidate: str) -> bool:
    """*earlier* shows *now*'s face again as it was: nearly the same box and distance to
    *candidate*. An exactly repeated image is one too. A face that holds still repeats its
    embedding's error, so only a changed look is further evidence."""
    before, after = earlier.identities.get(candidate), now.identities.get(candidate)
    return (before is not None and after is not None
            and abs(before - after) <= SAME_LOOK_DISTANCE
            and iou(earlier.box, now.box) >= SAME_LOOK_IOU)


def agrees(seen: Sighting | None, candidate: str, threshold: float) -> bool:
    """A frame agrees when the tracked face is there, nearest to `candidate`, within threshold."""
    return (seen is not None and seen.nearest() == candidate
            and seen.identities.get(candidate, float("inf")) <= threshold)


@dataclass(frozen=True)
class Verdict:
    """What the frames said about one borderline face."""

    candidate: str
    frames: tuple[int, ...]  # frame indices looked at, the face's own first
    distances: tuple[float | None, ...]  # to `candidate` on each; None: the face was not found
    agreeing: int
    rule: ConfirmRule

    @property
    def lost(self) -> bool:
        """The face was not found on the last frame looked at: its track has ended."""
        return self.distances[-1] is None

    @property
    def decision(self) -> str:
        return CONFIRMED if self.agreeing >= self.rule.agree else UNCONFIRMED

    @property
    def settled(self) -> bool:
        """True when no further frame could change the decision."""
        left = 0 if self.lost else self.rule.window - len(self.frames)
        return self.agreeing >= self.rule.agree or self.agreeing + left < self.rule.agree


def confirm(first: Sighting, frame: int, candidate: str, later: Sequence[FrameFaces],
            rule: ConfirmRule) -> Verdict:
    """Judge a borderline face (`first`, on frame `frame`) on the later sampled frames.

    The face is followed from frame to frame by box overlap with its box on the frame before. A
    frame where no face overlaps it ends the track: a face found again after a gap may as well be
    someone else (measured: test_5's boy, undetected on one frame, back in the band on the next).
    So does a frame that shows the face again as the track already saw it (`same_look`): a face
    held still repeats its embedding's error (measured: a stranger in a clip filmed from a still
    photo, 0.590 and 0.589 from johnny_dep three frames apart). Frames are read only until the
    verdict is settled, at most `rule.window - 1`; the video path reads them forwards, a camera's
    backwards (lambda_image.recognize.look_back).
    """
    box = first.box
    track = [first]
    frames, distances = [frame], [first.identities.get(candidate)]
    agreeing = int(agrees(first, candidate, rule.threshold))
    verdict = Verdict(candidate, tuple(frames), tuple(distances), agreeing, rule)
    for look in later[:rule.window - 1]:
        if verdict.settled:
            break
        seen = follow(box, look.faces, rule.min_iou)
        if seen is not None and any(same_look(s, seen, candidate) for s in track):
            seen = None  # the face held still: no second look, and the track ends here
        if seen is not None:
            box = seen.box
            track.append(seen)
        frames.append(look.index)
        distances.append(seen.identities.get(candidate) if seen is not None else None)
        agreeing += agrees(seen, candidate, rule.threshold)
        verdict = Verdict(candidate, tuple(frames), tuple(distances), agreeing, rule)
    return verdict
