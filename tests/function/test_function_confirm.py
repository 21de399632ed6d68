"""The borderline rule (lambda_image.confirm) on made-up distances and boxes: its edges one by one."""

from __future__ import annotations

import pytest

from lambda_image import confirm
from lambda_image.confirm import (
    ABOVE_THRESHOLD,
    BORDERLINE,
    CONFIDENT,
    CONFIRMED,
    UNCONFIRMED,
    ConfirmRule,
    FrameFaces,
    Sighting,
)

RULE = ConfirmRule(threshold=0.6, fraction=0.8, window=3, agree=2, min_iou=0.3)
BOX = (100.0, 100.0, 200.0, 220.0)


def seen(box: tuple[float, float, float, float] = BOX, **distances: float) -> Sighting:
    return Sighting(box=box, identities={"trump": 0.9, "floki": 0.9, **distances})


def shifted(dx: float, box: tuple[float, float, float, float] = BOX) -> tuple[float, ...]:
    return (box[0] + dx, box[1], box[2] + dx, box[3])


def frames(*faces_per_frame: tuple[Sighting, ...], start: int = 10) -> list[FrameFaces]:
    return [FrameFaces(start + 10 * i, faces) for i, faces in enumerate(faces_per_frame)]


@pytest.mark.parametrize("distance,spacing,expected", [
    (0.45, 0.646, CONFIDENT),           # well inside president_trump's bound (0.8 × 0.646)
    (0.5168, 0.646, CONFIDENT),         # the bound itself names
    (0.5169, 0.646, BORDERLINE),        # just past it: test_5's boy came within 0.541
    (0.567, 0.761, CONFIDENT),          # floki on test_6's first frame: 0.567 < 0.8 × 0.761
    (0.60, 0.74, BORDERLINE),           # the bound 0.592
    (0.60, 0.761, CONFIDENT),           # the bound 0.609, capped by the threshold, which matches
    (0.6001, 2.0, ABOVE_THRESHOLD),     # above the threshold no spacing names a face
    (0.59, float("inf"), CONFIDENT),    # a one-person gallery: the threshold alone
])
def test_first_look_bound_edges(distance: float, spacing: float, expected: str) -> None:
    assert confirm.first_look(distance, spacing, RULE) == expected


def test_the_bound_scales_with_the_gallery_not_the_embedder() -> None:
    dlib = ConfirmRule(threshold=0.6)
    facenet = ConfirmRule(threshold=0.9)

    assert dlib.bound(0.646) == pytest.approx(confirm.DEFAULT_FRACTION * 0.646)
    assert facenet.bound(0.646 * 1.5) == pytest.approx(1.5 * dlib.bound(0.646))
    assert (dlib.bound(5.0), facenet.bound(5.0)) == (0.6, 0.9)  # capped by the threshold


def test_an_infinite_fraction_turns_the_rule_off() -> None:
    off = ConfirmRule(threshold=0.6, fraction=float("inf"))

    assert confirm.first_look(0.6, 0.01, off) == CONFIDENT
    assert confirm.first_look(0.6001, 0.01, off) == ABOVE_THRESHOLD


@pytest.mark.parametrize("kwargs", [{"threshold": 0}, {"fraction": 0}, {"fraction": -1},
                                    {"agree": 4}, {"agree": 0}, {"min_iou": 0}])
def test_rule_rejects_nonsense(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        ConfirmRule(**{"threshold": 0.6, **kwargs})


def test_iou() -> None:
    assert confirm.iou(BOX, BOX) == 1.0
    assert confirm.iou(BOX, shifted(200)) == 0.0  # disjoint
    assert confirm.iou(BOX, shifted(100)) == 0.0  # touching edges
    assert confirm.iou(BOX, shifted(50)) == pytest.approx(1 / 3)
    assert confirm.iou(BOX, (0.0, 0.0, 0.0, 0.0)) == 0.0


def test_two_of_three_frames_agree_confirms_and_stops_reading() -> None:
    first = seen(trump=0.58)
    later = frames((seen(shifted(5), trump=0.57),), (seen(shifted(9), trump=0.9),))

    verdict = confirm.confirm(first, 0, "trump", later, RULE)

    assert verdict.decision == CONFIRMED and verdict.settled
    assert verdict.frames == (0, 10), "settled after one agreeing frame: the third is not read"
    assert verdict.distances == (0.58, 0.57)


def test_one_of_three_is_unconfirmed() -> None:
    first = seen(trump=0.58)
    later = frames((seen(trump=0.63),), (seen(trump=0.66),))

    verdict = confirm.confirm(first, 0, "trump", later, RULE)

    assert verdict.decision == UNCONFIRMED and verdict.settled
    assert verdict.frames == (0, 10, 20) and verdict.distances == (0.58, 0.63, 0.66)


def test_second_frame_disagrees_third_agrees() -> None:
    later = frames((seen(trump=0.61),), (seen(trump=0.59),))

    verdict = confirm.confirm(seen(trump=0.58), 0, "trump", later, RULE)

    assert verdict.decision == CONFIRMED and verdict.agreeing == 2
    assert verdict.frames == (0, 10, 20)


def test_threshold_itself_agrees_just_above_does_not() -> None:
    assert confirm.confirm(seen(trump=0.58), 0, "trump", frames((seen(trump=0.6),),),
                           RULE).decision == CONFIRMED
    assert confirm.confirm(seen(trump=0.58), 0, "trump",
                           frames((seen(trump=0.6001),), (seen(trump=0.6001),)),
                           RULE).decision == UNCONFIRMED


def test_another_identity_nearest_on_a_later_frame_disagrees() -> None:
    # within the threshold of the candidate, but someone else is nearer on those frames
    later = frames((seen(shifted(20), trump=0.59, floki=0.55),),
                   (seen(shifted(40), trump=0.58, floki=0.57),))

    verdict = confirm.confirm(seen(trump=0.58), 0, "trump", later, RULE)

    assert verdict.decision == UNCONFIRMED and verdict.distances == (0.58, 0.59, 0.58)


def test_a_face_held_still_is_no_second_look() -> None:
    # a stranger in a clip filmed from a still photo: 0.590 from johnny_dep, above the threshold
    # on the next sampled frame, then 0.589 at nearly the same place (IoU 0.96)
    later = frames((seen(shifted(2), trump=0.603),), (seen(shifted(2), trump=0.589),))

    verdict = confirm.confirm(seen(trump=0.590), 0, "trump", later, RULE)

    assert verdict.decision == UNCONFIRMED
    assert verdict.distances == (0.590, 0.603, None), "the repeated look ends the track"
    # the same distances after the face moved (IoU 0.54 with the first) are a second look
    moved = frames((seen(shifted(15), trump=0.603),), (seen(shifted(30), trump=0.589),))
    assert confirm.confirm(seen(trump=0.590), 0, "trump", moved, RULE).decision == CONFIRMED


def test_tracking_mismatch_a_face_elsewhere_is_not_evidence() -> None:
    # GIVEN later frames whose only face agrees but stands elsewhere in the picture (IoU 0)
    later = frames((seen(shifted(300), trump=0.5),), (seen(shifted(300), trump=0.5),))
    # WHEN judged THEN the borderline face was not found there: its track ends, unconfirmed
    verdict = confirm.confirm(seen(trump=0.58), 0, "trump", later, RULE)
    assert verdict.decision == UNCONFIRMED and verdict.settled and verdict.lost
    assert verdict.distances == (0.58, None), "nothing read after the track ended"


def test_a_face_back_after_a_gap_does_not_confirm() -> None:
    # test_5's boy on a re-encoded copy: 0.588 on frame 0, not detected on the next sampled frame,
    # 0.594 at the same place on the one after — two frames in the band, but not one track
    later = frames((), (seen(shifted(3), trump=0.594),))

    verdict = confirm.confirm(seen(trump=0.588), 0, "trump", later, RULE)

    assert verdict.decision == UNCONFIRMED and verdict.frames == (0, 10)


def test_tracking_picks_the_overlapping_face_among_several() -> None:
    near = seen(shifted(10), trump=0.57)  # IoU 0.82: the same face
    beside = seen(shifted(60), trump=0.9)  # IoU 0.25: below min_iou
    later = frames((beside, near),)

    verdict = confirm.confirm(seen(trump=0.58), 0, "trump", later, RULE)

    assert verdict.decision == CONFIRMED and verdict.distances == (0.58, 0.57)


def test_tracking_follows_a_moving_face_frame_by_frame() -> None:
    # 45 px per frame: IoU with the previous box 0.38, with the first box after two steps 0.05
    later = frames((seen(shifted(45), trump=0.7),), (seen(shifted(90), trump=0.55),))

    verdict = confirm.confirm(seen(trump=0.58), 0, "trump", later, RULE)

    assert verdict.distances == (0.58, 0.7, 0.55) and verdict.decision == CONFIRMED


def test_frames_without_faces_and_too_few_frames() -> None:
    assert confirm.confirm(seen(trump=0.58), 0, "trump", frames((), ()),
                           RULE).decision == UNCONFIRMED
    # the frame path (a single image) or a clip whose caps ended the sampling
    single = confirm.confirm(seen(trump=0.58), 0, "trump", [], RULE)
    assert single.decision == UNCONFIRMED and not single.settled
    assert single.frames == (0,) and single.distances == (0.58,)


def test_window_caps_the_frames_read() -> None:
    later = frames(*[(seen(trump=0.7),)] * 5)
    rule = ConfirmRule(threshold=0.6, window=5, agree=4)

    verdict = confirm.confirm(seen(trump=0.58), 0, "trump", later, rule)

    assert verdict.decision == UNCONFIRMED
    assert len(verdict.frames) == 3, "after two disagreeing frames 4 of 5 cannot be reached"


def test_agree_one_confirms_on_its_own_frame() -> None:
    rule = ConfirmRule(threshold=0.6, window=3, agree=1)

    verdict = confirm.confirm(seen(trump=0.58), 0, "trump", frames((seen(trump=0.9),),), rule)

    assert verdict.decision == CONFIRMED and verdict.frames == (0,)
