"""The Lambda entry points against a real moto server (S3, SQS, DynamoDB over HTTP)."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import TYPE_CHECKING

import botocore.exceptions
import pytest

from lambda_image import handlers

if TYPE_CHECKING:
    from conftest import Cloud


def test_course_clips_give_people_and_records(cloud: Cloud, course_data: Path,
                                              expected: dict) -> None:
    # GIVEN the 8 course clips uploaded, one with a space in its key
    records = [cloud.put(f"batch/{'my clip ' if clip == 'test_0.mp4' else ''}{clip}",
                         (course_data / "videos" / clip).read_bytes()) for clip in expected]
    # WHEN S3 (or the daemon) invokes the function with their notification
    answer = handlers.s3_handler({"Records": records}, None)
    # THEN every clip names its student with the database record, in S3, SQS and the return value
    results = answer["results"]
    assert len(results) == 8
    sent = [json.loads(b) for b in cloud.messages()]
    assert sorted(sent, key=lambda m: m["key"]) == sorted(results, key=lambda m: m["key"])
    for result in results:
        clip = result["key"].rsplit("/", 1)[-1].removeprefix("my clip ")
        row = expected[clip]
        first = f"{row['name']},{row['major']},{row['year']}\n"
        assert result["status"] == "ok"
        assert result["csv"].startswith(first)
        assert result["output"] == {"bucket": "out-bucket",
                                    "key": result["key"].removesuffix(".mp4") + ".csv"}
        assert cloud.csv_object(result["output"]["key"]) == result["csv"]
        assert result["faces"] and {"name", "distance", "frame", "box", "nearest", "runner_up",
                                    "runner_up_distance", "bound", "decision", "frames",
                                    "distances"} <= result["faces"][0].keys()
        (face,) = (f for f in result["faces"] if f["name"] == row["name"])
        assert face["decision"] == "confident" and face["frames"][0] == face["frame"]
        assert face["distance"] <= face["bound"] <= 0.6
        assert len(face["frames"]) == len(face["distances"]) == 1 + result["extra_frames"]
        assert result["frames_sampled"] == 1 + result["extra_frames"]
        assert result["etag"] and result["schema"] == 1
        assert {"download", "decode", "detect", "embed", "lookup", "write", "total"} <= \
            result["timings_ms"].keys()
    assert "batch/my clip test_0.mp4" in {r["key"] for r in results}


def test_test_event_is_ignored(cloud: Cloud) -> None:
    event = {"Service": "Amazon S3", "Event": "s3:TestEvent", "Bucket": "in-bucket"}

    assert handlers.s3_handler(event, None) == {"results": []}
    assert cloud.messages() == []


def test_sqs_body_forwarded_with_reply_to(cloud: Cloud, clips: dict) -> None:
    sqs = cloud.session.client("sqs")
    reply = sqs.create_queue(QueueName="daemon-replies")["QueueUrl"]
    body = json.dumps({"Records": [cloud.put("two presidents.mp4",
                                             clips["two_presidents"].read_bytes())]})

    answer = handlers.s3_handler({**json.loads(body), "reply_to": reply}, None)

    (result,) = answer["results"]
    assert result["key"] == "two presidents.mp4"
    assert result["csv"].splitlines() == ["president_obama,electrical_engineering,senior",
                                          "president_biden,history,sophomore"] or \
        result["csv"].splitlines() == ["president_biden,history,sophomore",
                                       "president_obama,electrical_engineering,senior"]
    assert [json.loads(b) for b in cloud.messages(reply)] == [result]
    assert cloud.messages() == [], "reply_to replaces the configured output queue"


def test_unknown_and_faceless_rows(cloud: Cloud, clips: dict) -> None:
    records = [cloud.put("stranger.mp4", clips["grace_hopper"].read_bytes()),
               cloud.put("nobody.mp4", clips["faceless"].read_bytes())]

    stranger, nobody = handlers.s3_handler({"Records": records}, None)["results"]

    assert stranger["csv"] == "unknown_person,,\n"
    assert nobody["csv"] == "no_persons_found,,\n" and nobody["faces"] == []
    assert cloud.csv_object("nobody.csv") == "no_persons_found,,\n"


@pytest.mark.parametrize("body", [b"", b"\x00\x00\x00\x18ftypmp42", b"name,major\nx,y\n"],
                         ids=["empty", "header-only", "text"])
def test_bad_file_is_an_error_result_not_an_exception(cloud: Cloud, course_data: Path,
                                                      body: bytes) -> None:
    if body.startswith(b"\x00"):
        body = (course_data / "videos" / "test_1.mp4").read_bytes()[:200]
    record = cloud.put("bad.mp4", body)

    (result,) = handlers.s3_handler({"Records": [record]}, None)["results"]

    assert result["status"] == "error"
    assert result["error"]["type"] == "InvalidVideo" and result["error"]["reason"]
    assert "csv" not in result and "output" not in result and result["people"] == []
    assert [json.loads(b) for b in cloud.messages()] == [result]
    s3 = cloud.session.client("s3")
    assert s3.list_objects_v2(Bucket="out-bucket").get("KeyCount", 0) == 0


@pytest.mark.parametrize(("photo", "key"), [("obama", "photo.mp4"), ("obama", "photo.jpg"),
                                             ("astronaut", "astronaut.png")])
def test_a_still_image_is_an_error_result_not_a_name(cloud: Cloud, photos: dict, photo: str,
                                                     key: str) -> None:
    # GIVEN a photo (JPEG or PNG) uploaded to the video bucket, under a video's name or its own
    record = cloud.put(key, photos[photo].read_bytes())

    (result,) = handlers.s3_handler({"Records": [record]}, None)["results"]

    # THEN it is an input error of its own type, and no name, row or CSV object is made up
    assert result["status"] == "error" and result["people"] == [] and "csv" not in result
    assert result["error"]["type"] == "NotAVideo"
    assert result["error"]["reason"].startswith("a still image (")
    assert "frame handler" in result["error"]["reason"]
    s3 = cloud.session.client("s3")
    assert s3.list_objects_v2(Bucket="out-bucket").get("KeyCount", 0) == 0


def test_gallery_name_without_record_gives_empty_fields(cloud: Cloud, course_data: Path) -> None:
    ddb = cloud.session.client("dynamodb")
    ddb.delete_item(TableName="students", Key={"name": {"S": "morgan_freeman"}})
    record = cloud.put("freeman.mp4", (course_data / "videos" / "test_7.mp4").read_bytes())

    (result,) = handlers.s3_handler({"Records": [record]}, None)["results"]

    assert result["csv"] == "morgan_freeman,,\n"


def test_missing_object_raises_no_such_key_exactly(cloud: Cloud) -> None:
    record = cloud.put("gone.mp4", b"x")
    cloud.session.client("s3").delete_object(Bucket="in-bucket", Key="gone.mp4")

    with pytest.raises(botocore.exceptions.ClientError) as info:
        handlers.s3_handler({"Records": [record]}, None)

    # The Lambda runtime reports type(exc).__name__ as errorType, and the daemon acknowledges a
    # deleted object (an ObjectGone .error) on errorType NoSuchKey exactly: any other error is
    # retried, so the exception must be S3's own NoSuchKey, not wrapped or re-raised as another.
    assert type(info.value).__name__ == "NoSuchKey"
    assert info.value.response["Error"]["Code"] == "NoSuchKey"
    assert cloud.messages() == [], "no result is sent for a failed invocation"


def test_missing_table_raises_for_retry(cloud: Cloud, course_data: Path) -> None:
    cloud.session.client("dynamodb").delete_table(TableName="students")
    record = cloud.put("t.mp4", (course_data / "videos" / "test_4.mp4").read_bytes())

    with pytest.raises(botocore.exceptions.ClientError):
        handlers.s3_handler({"Records": [record]}, None)
    assert cloud.messages() == [], "no result is sent for a failed invocation"


def test_frame_request_answers_over_http_and_queue(cloud: Cloud, photos: dict) -> None:
    content = base64.b64encode(photos["obama"].read_bytes()).decode()
    event = {"version": "2.0", "requestContext": {"http": {"method": "POST"}},
             "isBase64Encoded": False,
             "body": json.dumps({"content": content, "request_id": "r-1", "filename": "obama.jpg"})}

    response = handlers.frame_handler(event, None)

    assert response["statusCode"] == 200
    answer = json.loads(response["body"])
    assert (answer["request_id"], answer["result"]) == ("r-1", "president_obama")
    assert [json.loads(b) for b in cloud.messages(cloud.response_queue_url)] == [answer]


def test_frame_request_with_bad_content_is_400(cloud: Cloud) -> None:
    event = {"body": json.dumps({"content": base64.b64encode(b"not an image").decode(),
                                 "request_id": "r-2"})}

    response = handlers.frame_handler(event, None)

    assert response["statusCode"] == 400
    assert json.loads(response["body"])["request_id"] == "r-2"
    assert cloud.messages(cloud.response_queue_url) == []


def test_runtime_is_built_once_from_environment(aws_env: str, course_data: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GALLERY_PATH", str(course_data / "encoding"))
    monkeypatch.setenv("OUTPUT_BUCKET", "out-bucket")
    monkeypatch.setattr(handlers, "_runtime", None)

    first = handlers.runtime()

    assert handlers.runtime() is first
    assert first.settings.output_bucket == "out-bucket"
    assert first.recognizer.gallery.embedder == "dlib"
