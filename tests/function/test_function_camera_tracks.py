"""A camera's earlier frames confirm a borderline face (lambda_image.camera_tracks): the request
fields, the table on moto, the rule looking back, and the course's floki through both camera
paths' real handlers.

Under the default rule floki (test_6) is named on every frame the Pi would send (nearest floki at
0.565-0.589, at most 0.78 of his identity's spacing 0.761). The real-handler tests below need a
face that is borderline on a real camera stream, so they make the rule stricter (0.70 of the
spacing, `strict_rule`), under which every one of his frames is borderline. His face moves
between those frames: box overlap with the frame before is 0.60, 0.23 and 0.37. So with the
rule's IoU of 0.3 his frames 1 and 3 are confirmed, frame 0 has nothing before it, and frame 2's
track is broken by the jump. An earlier frame that shows the face again as it is (nearly the same
box and distance) is no second look.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from camera.frames import video_frames
from lambda_image import confirm, handlers
from lambda_image.camera_tracks import CameraFrame, CameraTracks, camera_frame
from lambda_image.errors import InvalidRequest
from lambda_image.matching import UNKNOWN
from lambda_image.recognize import FaceResult, Look, look_back
from tests.function.conftest import Cloud
from tests.function.test_function_camera import (
    answer_of,
    answers,
    frame_body,
    sqs_event,
    url_event,
)

RULE = confirm.ConfirmRule(0.6)
BOX = (100.0, 100.0, 200.0, 200.0)


# -- the request's fields ----------------------------------------------------------------------

def test_camera_and_sequence_come_together_or_not_at_all() -> None:
    assert camera_frame(None, None) is None and camera_frame("", "") is None
    assert camera_frame("pi-1", 0) == CameraFrame("pi-1", 0)
    assert camera_frame("pi-1", "41", from_text=True) == CameraFrame("pi-1", 41)


@pytest.mark.parametrize(("camera_id", "sequence", "from_text", "says"), [
    ("pi-1", None, False, "needs 'sequence'"),
    (None, 3, False, "needs 'camera_id'"),
    ("pi-1", -1, False, "integer"),
    ("pi-1", 1.5, False, "integer"),
    ("pi-1", True, False, "integer"),
    ("pi-1", "3", False, "integer"),  # JSON: a number, not a string
    ("pi-1", "x3", True, "integer"),
    ("pi-1", 2**53, False, "integer"),
    (7, 3, False, "printable string"),
    ("p" * 129, 3, False, "printable string"),
    ("pi\n1", 3, False, "printable string"),
])
def test_bad_camera_fields_are_refused(camera_id: Any, sequence: Any, from_text: bool,
                                       says: str) -> None:
    with pytest.raises(InvalidRequest, match=says):
        camera_frame(camera_id, sequence, from_text=from_text)


# -- the rule, looking back --------------------------------------------------------------------

def _borderline(index: int, distance: float = 0.57, box: tuple[float, ...] = BOX,
                ) -> tuple[Look, list[list[FaceResult]]]:
    """One frame with one face left `unconfirmed` by `pull` (nothing after it)."""
    face = FaceResult(name=UNKNOWN, distance=distance, frame=index,
                      box=tuple(round(v) for v in box), nearest="floki", runner_up="vin_diesel",
                      runner_up_distance=distance + 0.13, decision=confirm.UNCONFIRMED,
                      frames=(index,), distances=(distance,))
    sighting = confirm.Sighting(box=box, identities={"floki": distance,
                                                     "vin_diesel": distance + 0.13})
    return Look(index, [face], [sighting]), [[face]]


def _seen(index: int, box: tuple[float, ...] = BOX, **identities: float) -> confirm.FrameFaces:
    return confirm.FrameFaces(index, (confirm.Sighting(box=box, identities=identities),))


def _given(*frames: confirm.FrameFaces) -> Callable[[int], list[confirm.FrameFaces]]:
    return lambda count: list(frames[:count])


@pytest.mark.parametrize(("earlier", "decision", "distances"), [
    # the frame before agrees: 2 of 3
    ([_seen(4, floki=0.55)], confirm.CONFIRMED, (0.57, 0.55)),
    # confident on the frame before is agreement too
    ([_seen(4, floki=0.40)], confirm.CONFIRMED, (0.57, 0.40)),
    # the frame before was not kept (a gap): the track ends there, frame 3 is not reached
    ([confirm.FrameFaces(4, ()), _seen(3, floki=0.5)], confirm.UNCONFIRMED, (0.57, None)),
    # somebody else is nearest there
    ([_seen(4, vin_diesel=0.55, floki=0.58)], confirm.UNCONFIRMED, (0.57, 0.58)),
    # the same identity, but above the threshold
    ([_seen(4, floki=0.62)], confirm.UNCONFIRMED, (0.57, 0.62)),
    # the face before is elsewhere on the frame (no overlap): not this face
    ([_seen(4, (400.0, 100.0, 500.0, 200.0), floki=0.5)], confirm.UNCONFIRMED, (0.57, None)),
    # the same pixels sent again are no second look
    ([_seen(4, floki=0.57, vin_diesel=0.70), _seen(3, floki=0.5)], confirm.UNCONFIRMED,
     (0.57, None)),
    # nor is the face held still: nearly the same box (IoU 0.96) at nearly the same distance
    ([_seen(4, (101.0, 100.0, 201.0, 199.0), floki=0.575)], confirm.UNCONFIRMED, (0.57, None)),
    # the same place at a clearly other distance is a second look ...
    ([_seen(4, floki=0.54)], confirm.CONFIRMED, (0.57, 0.54)),
    # ... and so is the same distance after the face moved (IoU 0.54)
    ([_seen(4, (130.0, 100.0, 230.0, 200.0), floki=0.57)], confirm.CONFIRMED, (0.57, 0.57)),
    # no earlier frame at all (the stream's first)
    ([], confirm.UNCONFIRMED, (0.57,)),
])
def test_a_borderline_face_is_judged_on_the_cameras_frames_before_it(
        earlier: list[confirm.FrameFaces], decision: str,
        distances: tuple[float | None, ...]) -> None:
    look, per_frame = _borderline(5)

    read = look_back(look, per_frame, _given(*earlier), RULE)

    (face,) = per_frame[0]
    assert (face.decision, face.distances) == (decision, distances)
    assert face.name == ("floki" if decision == confirm.CONFIRMED else UNKNOWN)
    assert face.frames == (5, 4, 3)[:len(distances)]
    assert read == len(earlier[:RULE.window - 1])


def test_a_face_not_borderline_never_reads_the_table() -> None:
    look, per_frame = _borderline(5)
    per_frame[0][0] = FaceResult(name="floki", distance=0.4, frame=5, box=(1, 1, 9, 9),
                                 nearest="floki", decision=confirm.CONFIDENT)

    def unreadable(count: int) -> list[confirm.FrameFaces]:
        raise AssertionError("the table was read for a confident face")

    assert look_back(look, per_frame, unreadable, RULE) == 0
    assert per_frame[0][0].name == "floki"


# -- the table, on moto ------------------------------------------------------------------------

def _face(box: tuple[int, int, int, int], nearest: str, distance: float) -> FaceResult:
    return FaceResult(name=nearest, distance=distance, frame=0, box=box, nearest=nearest,
                      runner_up="bush", runner_up_distance=distance + 0.2,
                      decision=confirm.CONFIDENT)


def test_kept_frames_come_back_most_recent_first_and_missing_or_stale_ones_empty(
        cloud: Cloud) -> None:
    now = [1_000_000.0]
    tracks = CameraTracks(cloud.session.client("dynamodb"), "camera-tracks", max_age_s=10,
                          clock=lambda: now[0])
    tracks.keep(CameraFrame("pi-1", 2), [_face((1, 2, 3, 4), "floki", 0.5)])
    now[0] += 20  # frame 2 is now too old to be evidence
    tracks.keep(CameraFrame("pi-1", 4), [_face((5, 6, 7, 8), "floki", 0.55)])
    tracks.keep(CameraFrame("pi-1", 5), [])  # no face: not kept
    tracks.keep(CameraFrame("pi-2", 5), [_face((1, 1, 9, 9), "bush", 0.3)])  # another camera

    frames = tracks.earlier(CameraFrame("pi-1", 6), 4)

    assert [f.index for f in frames] == [5, 4, 3, 2]
    assert [len(f.faces) for f in frames] == [0, 1, 0, 0]
    (kept,) = frames[1].faces
    assert kept.box == (5.0, 6.0, 7.0, 8.0)
    assert kept.identities == {"floki": 0.55, "bush": 0.75}
    assert tracks.earlier(CameraFrame("pi-1", 0), 2) == []
    assert [f.index for f in tracks.earlier(CameraFrame("pi-1", 1), 2)] == [0]
    item = cloud.session.client("dynamodb").get_item(
        TableName="camera-tracks", Key={"camera_id": {"S": "pi-1"}, "sequence": {"N": "4"}})
    assert int(item["Item"]["expires_at"]["N"]) == int(now[0]) + 3600


# -- floki through the real handlers -----------------------------------------------------------

#: A fraction of the spacing under which every frame of floki's below is borderline (0.742-0.774).
STRICT_FRACTION = 0.70


@pytest.fixture()
def strict_rule(cloud: Cloud, monkeypatch: pytest.MonkeyPatch) -> confirm.ConfirmRule:
    """The handlers' rule made stricter for one test, so that floki is borderline."""
    recognizer = cloud.runtime.recognizer
    strict = replace(recognizer.rule, fraction=STRICT_FRACTION)
    monkeypatch.setattr(recognizer, "rule", strict)
    return strict

@pytest.fixture(scope="module")
def floki_frames(course_data: Path) -> list[bytes]:
    """floki's frames as the Pi sent them: every 15th of test_6."""
    return [f.data for f in video_frames(course_data / "videos" / "test_6.mp4", every=15)]


def _one_stage(frames: list[bytes], cameras: list[tuple[str, int] | None],
               ) -> list[dict[str, Any]]:
    out = []
    for i, (data, camera) in enumerate(zip(frames, cameras, strict=True)):
        body: dict[str, Any] = frame_body(data, f"f-{i}")
        if camera is not None:
            body.update(camera_id=camera[0], sequence=camera[1])
        out.append(answer_of(handlers.frame_handler(url_event(body), None)))
    return out


def _decisions(answer: dict[str, Any]) -> tuple[str, str, list[int]]:
    (face,) = answer["faces"]
    assert face["nearest"] == "floki"
    return answer["result"], face["decision"], face["frames"]


@pytest.mark.usefixtures("strict_rule")
def test_floki_is_named_once_his_cameras_frame_before_agrees(cloud: Cloud,
                                                             floki_frames: list[bytes],
                                                             expected: dict) -> None:
    answered = _one_stage(floki_frames, [("pi-floki", n) for n in range(len(floki_frames))])

    assert [_decisions(a) for a in answered] == [
        (UNKNOWN, "unconfirmed", [0]), ("floki", "confirmed", [1, 0]),
        (UNKNOWN, "unconfirmed", [2, 1]), ("floki", "confirmed", [3, 2])]
    row = expected["test_6.mp4"]
    assert answered[1]["people"] == [{k: row[k] for k in ("name", "major", "year")}]
    assert [(a["camera_id"], a["sequence"]) for a in answered] == [
        ("pi-floki", n) for n in range(4)]
    assert all("track" in a["timings_ms"] for a in answered)


@pytest.mark.usefixtures("strict_rule")
@pytest.mark.parametrize("why", ["no camera", "a gap", "two cameras", "the same frame again",
                                 "too old"])
def test_floki_stays_unknown_without_a_camera_track_that_agrees(
        cloud: Cloud, floki_frames: list[bytes], why: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    first, second = floki_frames[0], floki_frames[1]
    frames, cameras = {
        "no camera": ([first, second], [None, None]),
        "a gap": ([first, second], [("pi", 0), ("pi", 2)]),
        "two cameras": ([first, second], [("pi-a", 0), ("pi-b", 1)]),
        "the same frame again": ([first, first], [("pi", 0), ("pi", 1)]),
        "too old": ([first, second], [("pi", 0), ("pi", 1)]),
    }[why]
    if why == "too old":
        monkeypatch.setattr(cloud.runtime, "tracks", CameraTracks(
            cloud.session.client("dynamodb"), "camera-tracks", max_age_s=0.0))

    answered = _one_stage(frames, cameras)

    assert [a["result"] for a in answered] == [UNKNOWN, UNKNOWN]
    assert {f["decision"] for a in answered for f in a["faces"]} == {"unconfirmed"}


@pytest.mark.usefixtures("strict_rule")
def test_the_two_stage_path_confirms_floki_as_the_one_stage_path_does(
        cloud: Cloud, floki_frames: list[bytes]) -> None:
    for sequence, data in enumerate(floki_frames):  # one at a time, as a camera waits
        body = {**frame_body(data, f"t-{sequence}"), "camera_id": "pi-2", "sequence": sequence}
        assert handlers.detect_handler(url_event(body), None)["statusCode"] == 200
        event = sqs_event(cloud, cloud.request_queue_url)
        (record,) = event["Records"]
        assert (json.loads(record["body"])["camera_id"],
                json.loads(record["body"])["sequence"]) == ("pi-2", sequence)
        assert handlers.recognize_handler(event, None) == {"batchItemFailures": []}

    by_id = {a["request_id"]: a for a in answers(cloud)}
    assert [_decisions(by_id[f"t-{n}"]) for n in range(4)] == [
        (UNKNOWN, "unconfirmed", [0]), ("floki", "confirmed", [1, 0]),
        (UNKNOWN, "unconfirmed", [2, 1]), ("floki", "confirmed", [3, 2])]


def test_under_the_default_rule_floki_needs_no_frame_before(cloud: Cloud,
                                                            floki_frames: list[bytes]) -> None:
    answered = _one_stage(floki_frames, [("pi-floki", n) for n in range(len(floki_frames))])

    assert [_decisions(a) for a in answered] == [("floki", "confident", [n])
                                                 for n in range(len(floki_frames))]


def test_bad_camera_fields_through_the_url_are_a_400(cloud: Cloud,
                                                     floki_frames: list[bytes]) -> None:
    for entry in (handlers.frame_handler, handlers.detect_handler):
        body = {**frame_body(floki_frames[0], "b-1"), "camera_id": "pi"}
        response = entry(url_event(body), None)
        assert response["statusCode"] == 400
        assert answer_of(response)["error"]["type"] == "InvalidRequest"
    get = handlers.frame_handler(url_event(None, method="GET", query={
        "bucket": "frames-bucket", "key": "k.jpg", "camera_id": "pi", "sequence": "-1"}), None)
    assert get["statusCode"] == 400
    assert answers(cloud) == [] and cloud.messages(cloud.request_queue_url) == []
