"""The borderline rule: a face that matches only just below the threshold is named only when more
evidence agrees (README "Recognition"; the figures are measured by bench/borderline.py).

One frame cannot tell a borderline true match from an unenrolled face that happens to land near
somebody: on the course data the unenrolled boy beside vin_diesel in test_5 comes within 0.54 of
president_trump on some re-encodings of the first frame, with a runner-up up to 0.15 further, while
floki matches at 0.57 with a runner-up 0.13 further. So:

* `confident`: the best distance is at most threshold - band: named at once, as before;
* `margin`: in the band, but the runner-up identity is at least `margin` further: named at once;
* otherwise the face is tracked by box overlap over the next sampled frames (its own frame plus
  `window - 1` more, the track ending where the face is not found) and named only when `agree` of
  those frames put the same identity nearest and within the threshold (`confirmed`); else it is
  `unknown_person` (`unconfirmed`);
* above the threshold it is `unknown_person` as before (`above_threshold`).

Everything here is pure: the recognizer feeds it distances and boxes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

Box = tuple[float, float, float, float]  # x1, y1, x2, y2

CONFIDENT = "confident"
MARGIN = "margin"
CONFIRMED = "confirmed"
UNCONFIRMED = "unconfirmed"
ABOVE_THRESHOLD = "above_threshold"
#: a first look only, settled by `confirm` into CONFIRMED or UNCONFIRMED
BORDERLINE = "borderline"

#: Defaults, as fractions of the embedder's threshold (dlib 0.6: band 0.09, i.e. (0.51, 0.6], and
#: margin 0.18), chosen from bench/borderline.py's measurements (README "Recognition"): test_5's
#: unenrolled boy came within 0.541 of president_trump on the first frame of 160 re-encoded copies
#: (mean 0.615, sd 0.027: the band's lower edge is 3.9 sd below it) and his runner-up at most
#: 0.155 further when within the threshold; floki, the course's closest true match, is at 0.57
#: with a runner-up 0.13 further, so no single-frame cut separates the two.
DEFAULT_BAND = 0.15
DEFAULT_MARGIN = 0.30
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
    """The rule's numbers in distance units of one embedder."""

    threshold: float
    band: float  # a face at threshold - band < distance <= threshold is borderline (0: none)
    margin: float  # ... and named at once when its runner-up is at least this much further
    window: int = DEFAULT_WINDOW  # frames a borderline face is judged on, its own included
    agree: int = DEFAULT_AGREE  # of which this many must agree
    min_iou: float = DEFAULT_MIN_IOU

    def __post_init__(self) -> None:
        if not 0 <= self.band <= self.threshold:
            raise ValueError(f"band {self.band} must lie in [0, threshold {self.threshold}]")
        if self.margin < 0:
            raise ValueError(f"margin {self.margin} must not be negative")
        if not 1 <= self.agree <= self.window:
            raise ValueError(f"agree {self.agree} must lie in [1, window {self.window}]")
        if not 0 < self.min_iou <= 1:
            raise ValueError(f"min_iou {self.min_iou} must lie in (0, 1]")

    @classmethod
    def relative(cls, threshold: float, *, band: float = DEFAULT_BAND,
                 margin: float = DEFAULT_MARGIN, window: int = DEFAULT_WINDOW,
                 agree: int = DEFAULT_AGREE, min_iou: float = DEFAULT_MIN_IOU) -> ConfirmRule:
        """`band` and `margin` as fractions of `threshold`: one setting fits every embedder."""
        return cls(threshold=threshold, band=band * threshold, margin=margin * threshold,
                   window=window, agree=agree, min_iou=min_iou)

    @property
    def lower_edge(self) -> float:
        return self.threshold - self.band


def first_look(distance: float, margin: float, rule: ConfirmRule) -> str:
    """One frame's verdict on a face: ABOVE_THRESHOLD, CONFIDENT, MARGIN or BORDERLINE (needs
    frames)."""
    if distance > rule.threshold:
        return ABOVE_THRESHOLD
    if distance <= rule.lower_edge:
        return CONFIDENT
    if margin >= rule.margin:
        return MARGIN
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
    Frames are read only until the verdict is settled, at most `rule.window - 1`.
    """
    box = first.box
    frames, distances = [frame], [first.identities.get(candidate)]
    agreeing = int(agrees(first, candidate, rule.threshold))
    verdict = Verdict(candidate, tuple(frames), tuple(distances), agreeing, rule)
    for look in later[:rule.window - 1]:
        if verdict.settled:
            break
        seen = follow(box, look.faces, rule.min_iou)
        box = seen.box if seen is not None else box
        frames.append(look.index)
        distances.append(seen.identities.get(candidate) if seen is not None else None)
        agreeing += agrees(seen, candidate, rule.threshold)
        verdict = Verdict(candidate, tuple(frames), tuple(distances), agreeing, rule)
    return verdict
