"""Input parsing against real S3 notification bodies from the moto server."""

from __future__ import annotations

import json
from typing import Any

import boto3
import pytest

from openstack_handler.daemon.events import (
    MessageKind,
    S3ObjectRef,
    invocation_payload,
    is_still_image,
    parse_input_message,
)

HOSTILE_KEYS = [
    "plain.mp4",
    "dir/my clip.mp4",
    "ünïcødé/видео 1.mp4",
    "a+b.mp4",
    "100%real.mp4",
    "../../etc/passwd",
    "x/./y/../z.mp4",
]


def _drain(sqs: Any, url: str) -> list[dict[str, Any]]:
    bodies = []
    while True:
        msgs = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10,
                                   WaitTimeSeconds=0).get("Messages", [])
        if not msgs:
            return bodies
        for m in msgs:
            bodies.append(m["Body"])
            sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])


@pytest.fixture()
def notifying_bucket(boto_session: boto3.session.Session) -> tuple[Any, Any, str]:
    """GIVEN a bucket whose ObjectCreated events go to an SQS queue (as in production)."""
    s3 = boto_session.client("s3")
    sqs = boto_session.client("sqs")
    s3.create_bucket(Bucket="videos")
    url = sqs.create_queue(QueueName="events")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"]
    s3.put_bucket_notification_configuration(Bucket="videos", NotificationConfiguration={
        "QueueConfigurations": [{"QueueArn": arn, "Events": ["s3:ObjectCreated:*"]}]})
    return s3, sqs, url


def test_configuring_a_notification_sends_a_test_event(notifying_bucket) -> None:
    _, sqs, url = notifying_bucket
    bodies = _drain(sqs, url)
    assert bodies, "moto sends s3:TestEvent when a notification is configured"
    assert {parse_input_message(b).kind for b in bodies} == {MessageKind.TEST_EVENT}


def test_real_notifications_decode_hostile_keys(notifying_bucket) -> None:
    s3, sqs, url = notifying_bucket
    _drain(sqs, url)  # the test event
    # WHEN objects with spaces, unicode, '+', '%' and '..' in their keys are uploaded
    etags = {}
    for key in HOSTILE_KEYS:
        etags[key] = s3.put_object(Bucket="videos", Key=key, Body=b"v" * 7)["ETag"].strip('"')
    bodies = _drain(sqs, url)
    # THEN every body parses to the exact key, bucket, eTag and size
    refs = [ref for body in bodies for ref in parse_input_message(body).objects]
    assert sorted(r.key for r in refs) == sorted(HOSTILE_KEYS)
    for ref in refs:
        assert ref.bucket == "videos"
        assert ref.etag == etags[ref.key]
        assert ref.size == 7
        assert ref.event_name.startswith("ObjectCreated:")
        assert ref.identity == ("videos", ref.key, ref.etag)
    raw_keys = [json.loads(b)["Records"][0]["s3"]["object"]["key"] for b in bodies]
    assert any("+" in k for k in raw_keys), "moto encodes spaces as '+'"


def test_multipart_upload_events_share_an_identity(notifying_bucket) -> None:
    s3, sqs, url = notifying_bucket
    _drain(sqs, url)
    mpu = s3.create_multipart_upload(Bucket="videos", Key="big clip.mp4")
    part = s3.upload_part(Bucket="videos", Key="big clip.mp4", PartNumber=1,
                          UploadId=mpu["UploadId"], Body=b"x" * 1024)
    s3.complete_multipart_upload(Bucket="videos", Key="big clip.mp4", UploadId=mpu["UploadId"],
                                 MultipartUpload={"Parts": [{"ETag": part["ETag"],
                                                             "PartNumber": 1}]})
    refs = [r for b in _drain(sqs, url) for r in parse_input_message(b).objects]
    assert refs, "at least one ObjectCreated event"
    assert len({r.identity for r in refs}) == 1  # duplicates collapse on (bucket, key, eTag)


def record(**obj: Any) -> dict[str, Any]:
    return {"eventName": "ObjectCreated:Put",
            "s3": {"bucket": {"name": "b"}, "object": {"key": "k.mp4", "eTag": "e", **obj}}}


@pytest.mark.parametrize(("body", "reason"), [
    ("not json", "not JSON"),
    ("[1, 2]", "not an object"),
    ('{"hello": 1}', "without a Records list"),
    ('{"Records": "nope"}', "without a Records list"),
    ('{"Records": [{"eventName": "ObjectCreated:Put"}]}', "lacks"),
    (json.dumps({"Records": [record(size=-1)]}), "invalid size"),
    (json.dumps({"Records": [record(key="")]}), "empty"),
])
def test_invalid_bodies_are_classified_not_raised(body: str, reason: str) -> None:
    parsed = parse_input_message(body)
    assert parsed.kind is MessageKind.INVALID
    assert reason in (parsed.reason or "")


def test_non_created_records_are_skipped_and_the_rest_kept() -> None:
    removed = record()
    removed["eventName"] = "ObjectRemoved:Delete"
    parsed = parse_input_message(json.dumps({"Records": [removed, record(size=3)]}))
    assert parsed.kind is MessageKind.RECORDS
    assert parsed.skipped_events == ("ObjectRemoved:Delete",)
    assert [o.key for o in parsed.objects] == ["k.mp4"]
    assert invocation_payload(parsed.objects) == {"Records": [record(size=3)]}


def test_sns_envelope_is_unwrapped_and_etag_quotes_stripped() -> None:
    inner = json.dumps({"Records": [record(eTag='"abc"', versionId="v1")]})
    parsed = parse_input_message(json.dumps({"Type": "Notification", "Message": inner}))
    (ref,) = parsed.objects
    assert (ref.etag, ref.version_id) == ("abc", "v1")
    assert isinstance(ref, S3ObjectRef) and ref.raw["eventName"] == "ObjectCreated:Put"


@pytest.mark.parametrize(("key", "still"), [
    ("test_00.jpg", True), ("dir/Photo.JPEG", True), ("a.png", True), ("x.webp", True),
    ("y.bmp", True), ("clip.mp4", False), ("clip.jpg.mp4", False), ("jpg", False),
    ("noext", False), ("anim.gif", False)])
def test_still_images_are_the_web_tiers_by_their_suffix(key: str, still: bool) -> None:
    assert is_still_image(key) is still
