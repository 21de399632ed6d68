"""Small pure pieces: events, CSV, voting, settings, galleries, rotation."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from lambda_image import confirm
from lambda_image.config import FunctionSettings
from lambda_image.errors import ConfigError, GalleryError, InvalidRequest
from lambda_image.events import frame_request, s3_objects
from lambda_image.gallery import Gallery, inspect_gallery, load_gallery, save_gallery
from lambda_image.matching import Matcher
from lambda_image.outputs import csv_key, person_rows, render_csv
from lambda_image.recognize import FaceResult, decide
from lambda_image.video import rotate_k


def test_s3_keys_are_url_decoded_and_test_events_dropped() -> None:
    event = {"Records": [
        {"eventName": "ObjectCreated:Put",
         "s3": {"bucket": {"name": "b"}, "object": {"key": "a%2Fmy+clip.mp4", "eTag": "e"}}},
        {"eventName": "ObjectRemoved:Delete",
         "s3": {"bucket": {"name": "b"}, "object": {"key": "x.mp4"}}},
    ]}

    (obj,) = s3_objects(event)

    assert (obj.bucket, obj.key, obj.etag) == ("b", "a/my clip.mp4", "e")
    assert list(s3_objects({"Event": "s3:TestEvent", "Records": []})) == []


def test_frame_request_decodes_body_and_rejects_garbage() -> None:
    import base64
    import json

    body = json.dumps({"content": base64.b64encode(b"img").decode(), "request_id": "r"})
    assert frame_request({"body": body}).content == b"img"
    encoded = base64.b64encode(body.encode()).decode()
    assert frame_request({"body": encoded, "isBase64Encoded": True}).request_id == "r"
    with pytest.raises(InvalidRequest):
        frame_request({"body": json.dumps({"content": "***"})})
    with pytest.raises(InvalidRequest):
        frame_request({"body": "{not json"})


def test_csv_rows_and_key() -> None:
    rows = person_rows(["a", "ghost", "unknown_person"], {"a": {"name": "a", "major": "m",
                                                               "year": "y"}})

    assert render_csv(rows) == "a,m,y\nghost,,\nunknown_person,,\n"
    assert render_csv(person_rows([], {})) == "no_persons_found,,\n"
    assert csv_key("dir/my clip.mp4") == "dir/my clip.csv"
    assert csv_key("noext") == "noext.csv"


def _face(name: str, frame: int, size: int) -> FaceResult:
    return FaceResult(name=name, distance=0.4, frame=frame, box=(0, 0, size, size), nearest=name)


def test_votes_order_and_unknown_rule() -> None:
    # an unknown face in an early frame, recognised later: not reported as a stranger
    assert decide([[_face("unknown_person", 0, 50)], [_face("a", 1, 50)]]) == ["a"]
    # the deciding frame holds a stranger beside a known face: both reported, known first
    assert decide([[_face("unknown_person", 0, 90), _face("a", 0, 50)]]) == ["a", "unknown_person"]
    # larger face first
    assert decide([[_face("a", 0, 40), _face("b", 0, 80)]]) == ["b", "a"]
    assert decide([[], []]) == []


def test_matcher_threshold() -> None:
    gallery = Gallery(names=("a", "b"), embeddings=np.eye(2, 128, dtype=np.float32),
                      embedder="dlib")
    probes = np.zeros((2, 128), dtype=np.float32)
    probes[0, 0] = 0.9  # 0.1 from a
    probes[1, 5] = 1.0  # far from both

    near, far = Matcher(gallery).match(probes)

    assert (near.name, round(near.distance, 3)) == ("a", 0.1)
    assert far.name == "unknown_person" and far.nearest in {"a", "b"}


def test_matcher_runner_up_is_the_nearest_other_identity() -> None:
    # "a" has two gallery rows: its second row is never the runner-up of a face nearest to "a"
    rows = np.zeros((3, 128), dtype=np.float32)
    rows[0, 0], rows[1, 0], rows[2, 1] = 1.0, 0.9, 1.0
    gallery = Gallery(names=("a", "a", "b"), embeddings=rows, embedder="dlib")
    probe = np.zeros((1, 128), dtype=np.float32)
    probe[0, 0] = 0.95

    (match,) = Matcher(gallery).match(probe)

    assert (match.name, match.runner_up) == ("a", "b")
    assert match.distance == pytest.approx(0.05)
    assert match.runner_up_distance == pytest.approx(np.hypot(0.95, 1.0))
    assert match.margin == pytest.approx(np.hypot(0.95, 1.0) - 0.05)
    assert match.identities == pytest.approx({"a": 0.05, "b": np.hypot(0.95, 1.0)})


def test_matcher_with_one_identity_has_no_runner_up() -> None:
    gallery = Gallery(names=("a",), embeddings=np.eye(1, 128, dtype=np.float32), embedder="dlib")

    (match,) = Matcher(gallery).match(np.eye(1, 128, dtype=np.float32))

    assert match.runner_up == "" and match.margin == float("inf")


def test_confirm_settings_from_env() -> None:
    default = FunctionSettings.from_env({})
    assert default.confirm_fraction == confirm.DEFAULT_FRACTION
    assert (default.confirm_frames, default.confirm_agree) == (3, 2)
    custom = FunctionSettings.from_env({"CONFIRM_FRACTION": "0.7", "CONFIRM_FRAMES": "4",
                                        "CONFIRM_AGREE": "3"})
    assert (custom.confirm_fraction, custom.confirm_frames, custom.confirm_agree) == (0.7, 4, 3)
    assert FunctionSettings.from_env({"CONFIRM_FRACTION": "inf"}).confirm_fraction == float("inf")
    for bad in ({"CONFIRM_FRACTION": "0"}, {"CONFIRM_FRACTION": "-0.1"},
                {"CONFIRM_FRACTION": "wide"}, {"CONFIRM_FRAMES": "0"},
                {"CONFIRM_FRAMES": "2", "CONFIRM_AGREE": "3"}):
        with pytest.raises(ConfigError):
            FunctionSettings.from_env(bad)


@pytest.mark.parametrize("retired", ["CONFIRM_BAND", "CONFIRM_MARGIN"])
def test_the_retired_band_settings_are_refused_not_ignored(retired: str) -> None:
    with pytest.raises(ConfigError, match="CONFIRM_FRACTION"):
        FunctionSettings.from_env({retired: "0.15"})


def test_each_identity_s_spacing_is_its_distance_to_the_nearest_other_identity() -> None:
    # two rows of "a" (their own distance never counts), "b" 3 from the nearer "a", "c" far off
    rows = np.zeros((4, 128), dtype=np.float32)
    rows[1, 0], rows[2, 0], rows[3, 1] = 1.0, 4.0, 10.0
    gallery = Gallery(names=("a", "a", "b", "c"), embeddings=rows, embedder="dlib")

    matcher = Matcher(gallery)

    assert matcher.spacing == pytest.approx({"a": 3.0, "b": 3.0, "c": 10.0})
    (match,) = matcher.match(rows[2:3] + 0.1)
    assert (match.nearest, match.spacing) == ("b", pytest.approx(3.0))
    one = Matcher(Gallery(names=("a",), embeddings=rows[:1], embedder="dlib"))
    assert one.spacing == {"a": float("inf")}


def test_settings_from_env() -> None:
    settings = FunctionSettings.from_env({"GALLERY_PATH": "/g", "MATCH_THRESHOLD": "0.5",
                                          "MAX_FRAMES": "3", "TORCH_HOME": "/t"})

    assert settings.gallery_path == Path("/g") and settings.match_threshold == 0.5
    assert settings.max_frames == 3 and settings.max_decode_seconds == 2.0
    assert settings.students_table == "students" and settings.inference_threads == 1
    assert settings.inference_runtime == "torch" and settings.model_dir is None
    with pytest.raises(ConfigError):
        FunctionSettings.from_env({"MAX_FRAMES": "many"})
    with pytest.raises(ConfigError):
        FunctionSettings.from_env({}).require_gallery()


@pytest.mark.parametrize("embedder,dim", [("dlib", 128), ("facenet", 512)])
def test_gallery_round_trip_in_its_own_format(tmp_path: Path, embedder: str, dim: int) -> None:
    gallery = Gallery(names=("x", "y", "x"), embedder=embedder,
                      embeddings=np.random.default_rng(0).random((3, dim), dtype=np.float32))

    loaded = load_gallery(save_gallery(gallery, tmp_path / "g"))

    assert loaded.embedder == embedder and loaded.names == gallery.names
    assert np.allclose(loaded.embeddings, gallery.embeddings)
    assert inspect_gallery(loaded)["people"] == {"x": 2, "y": 1}


def test_gallery_pickle_may_not_run_code(tmp_path: Path) -> None:
    path = tmp_path / "evil"
    path.write_bytes(pickle.dumps({"name": ["a"], "encoding": [Path("/")]}))

    with pytest.raises(GalleryError):
        load_gallery(path)


def test_rotation_quarter_turns() -> None:
    assert [rotate_k(r) for r in (0, 90, -90, 180, 270, -180)] == [0, 1, 3, 2, 3, 2]


class _ThrottledTable:
    """A fake DynamoDB client for the error path: for its first *rounds* calls it answers only
    *answered* keys and leaves the rest unprocessed, as a throttled table does."""

    def __init__(self, rounds: int, answered: int = 1) -> None:
        self.rounds = rounds
        self.answered = answered
        self.calls = 0

    def batch_get_item(self, RequestItems: dict[str, Any]) -> dict[str, Any]:
        self.calls += 1
        (table, request), = RequestItems.items()
        keys = request["Keys"]
        if self.calls <= self.rounds:
            done, left = keys[:self.answered], keys[self.answered:]
        else:
            done, left = keys, []
        items = [{"name": k["name"], "major": {"S": "m"}, "year": {"S": "y"}} for k in done]
        return {"Responses": {table: items},
                "UnprocessedKeys": {table: {"Keys": left}} if left else {}}


def test_unprocessed_keys_are_retried_with_a_growing_jittered_backoff() -> None:
    from lambda_image.records import StudentRecords

    sleeps: list[float] = []
    client = _ThrottledTable(rounds=2)
    found = StudentRecords(client, "students", sleep=sleeps.append).lookup(["a", "b", "c", "d"])
    assert sorted(found) == ["a", "b", "c", "d"]
    assert client.calls == 3 and len(sleeps) == 2
    assert all(0 <= s <= 1.0 for s in sleeps)


def test_keys_left_unprocessed_every_round_raise_for_a_retry_by_the_caller() -> None:
    from lambda_image.errors import InfrastructureError
    from lambda_image.records import StudentRecords

    client = _ThrottledTable(rounds=100, answered=0)
    with pytest.raises(InfrastructureError):
        StudentRecords(client, "students", sleep=lambda s: None).lookup(["a", "b", "c"])
    assert client.calls == 5


def test_unprocessed_backoff_is_full_jitter_with_a_cap() -> None:
    from lambda_image.records import unprocessed_backoff_s

    assert unprocessed_backoff_s(1, rng=lambda: 1.0) == pytest.approx(0.1)
    assert unprocessed_backoff_s(3, rng=lambda: 1.0) == pytest.approx(0.4)
    assert unprocessed_backoff_s(10, rng=lambda: 1.0) == 1.0
    assert unprocessed_backoff_s(10, rng=lambda: 0.0) == 0.0
