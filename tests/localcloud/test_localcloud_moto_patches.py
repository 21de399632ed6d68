"""The local moto server's speed patches (localcloud.moto_main) keep SQS's semantics.

The patches replace moto's per-message time lookups and queue scans with cheaper equivalents, and
cache what its router and dispatcher recompute per request; these tests check that every patch
still applies, and run the real patched server over HTTP to check what the patched code decides:
which messages are visible, delayed or in flight, what the queue's counters say, and retention.
(Every other test of the local cloud runs on the patched server too.)
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from polling import wait_for

from localcloud.moto_main import _valid_by_retention

REPO = Path(__file__).resolve().parents[2]


def _counts(sqs: Any, url: str) -> tuple[int, int, int]:
    attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    return (int(attrs["ApproximateNumberOfMessages"]),
            int(attrs["ApproximateNumberOfMessagesNotVisible"]),
            int(attrs["ApproximateNumberOfMessagesDelayed"]))


def _patches_applied(env: dict[str, str]) -> set[str]:
    """What apply_patches() patches in a fresh interpreter (it changes moto, werkzeug and Flask
    for the whole process, as it should in the server, not in this test process)."""
    code = ("import json, sys; from localcloud.moto_main import apply_patches; "
            "print(json.dumps(apply_patches(json.loads(sys.argv[1]))))")
    proc = subprocess.run([sys.executable, "-c", code, json.dumps(env)], cwd=REPO,
                          capture_output=True, text=True, timeout=120, check=True)
    return set(json.loads(proc.stdout))


def test_every_patch_still_applies_to_this_moto() -> None:
    # A moto upgrade that renames what we patch should fail here, not slow the local cloud down.
    assert _patches_applied({}) == {
        "backends.list_of_moto_modules", "sqs.unix_time", "sqs.unix_time_millis",
        "sqs.Queue.messages", "sqs.Queue.approximate_number_of_messages",
        "sqs.Queue.approximate_number_of_messages_delayed",
        "sqs.Queue.approximate_number_of_messages_not_visible",
        "sqs.is_message_valid_based_on_retention_period",
        "DomainDispatcherApplication.get_backend_for_host",
        "responses.method_names_from_class", "responses.camelcase_to_underscores",
        "werkzeug.WSGIRequestHandler.log_request",
        "flask.debughelpers.attach_enctype_error_multidict", "s3.notifications._invoke_awslambda",
        "s3.put_bucket_notification_configuration", "awslambda.put_function_event_invoke_config",
        "s3.complete_multipart_upload"}
    # AND the access log can be had back for debugging
    assert "werkzeug.WSGIRequestHandler.log_request" not in _patches_applied(
        {"LOCALCLOUD_MOTO_ACCESS_LOG": "1"})


def test_visibility_delay_and_counters_on_the_patched_server(sqs: Any) -> None:
    url = sqs.create_queue(QueueName="patched-semantics")["QueueUrl"]
    # GIVEN three ready messages and one delayed by 4 s (time enough for the checks below)
    sqs.send_message_batch(QueueUrl=url, Entries=[
        {"Id": str(i), "MessageBody": f"ready-{i}"} for i in range(3)])
    sqs.send_message(QueueUrl=url, MessageBody="later", DelaySeconds=4)
    assert _counts(sqs, url) == (3, 0, 1)

    # WHEN two are received
    got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=2, VisibilityTimeout=30,
                              MessageSystemAttributeNames=["ApproximateReceiveCount"])
    assert len(got["Messages"]) == 2
    # THEN they are in flight, and a receive gets only the third ready message, not the delayed
    assert _counts(sqs, url) == (1, 2, 1)
    rest = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=30)
    assert [m["Body"] for m in rest["Messages"]] == ["ready-2"]

    # WHEN the two's visibility timeout runs out (cut to 1 s) and the delay passes
    sqs.change_message_visibility_batch(QueueUrl=url, Entries=[
        {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"], "VisibilityTimeout": 1}
        for i, m in enumerate(got["Messages"])])
    again: list[dict[str, Any]] = []
    wait_for(lambda: again.extend(sqs.receive_message(
        QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=30, WaitTimeSeconds=1,
        MessageSystemAttributeNames=["ApproximateReceiveCount"]).get("Messages", []))
        or len(again) >= 3, timeout_s=20, what="the two and the delayed message")
    bodies = {m["Body"]: m for m in again}
    # THEN the two come back with a second receive count, and the delayed one is there
    assert set(bodies) == {m["Body"] for m in got["Messages"]} | {"later"}
    assert {bodies[m["Body"]]["Attributes"]["ApproximateReceiveCount"]
            for m in got["Messages"]} == {"2"}
    assert _counts(sqs, url) == (0, 4, 0)

    # AND deletes with the newest receipt handles empty the queue
    sqs.delete_message_batch(QueueUrl=url, Entries=[
        {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
        for i, m in enumerate([*again, *rest["Messages"]])])
    assert _counts(sqs, url) == (0, 0, 0)


def test_retention_keeps_fresh_messages_and_drops_expired_ones(sqs: Any) -> None:
    url = sqs.create_queue(QueueName="patched-retention",
                           Attributes={"MessageRetentionPeriod": "60"})["QueueUrl"]
    sqs.send_message(QueueUrl=url, MessageBody="fresh")
    assert [m["Body"] for m in sqs.receive_message(
        QueueUrl=url, VisibilityTimeout=0)["Messages"]] == ["fresh"]
    # The server's clock cannot be moved from here: the expiry side is checked on the function.
    backend = SimpleNamespace(get_queue=lambda name: SimpleNamespace(
        message_retention_period="60"))
    now_ms = time.time() * 1000
    assert _valid_by_retention(backend, "q", SimpleNamespace(sent_timestamp=now_ms - 59_000))
    assert not _valid_by_retention(backend, "q", SimpleNamespace(sent_timestamp=now_ms - 61_000))


def test_a_multipart_upload_sends_one_event_as_s3_does(boto_session: Any, sqs: Any) -> None:
    # GIVEN a bucket that notifies a queue of every created object (its s3:TestEvent, which
    # has no Records, is left out below)
    s3 = boto_session.client("s3")
    url = sqs.create_queue(QueueName="multipart-events")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])[
        "Attributes"]["QueueArn"]
    s3.create_bucket(Bucket="multipart-videos")
    s3.put_bucket_notification_configuration(Bucket="multipart-videos", NotificationConfiguration={
        "QueueConfigurations": [{"QueueArn": arn, "Events": ["s3:ObjectCreated:*"]}]})
    # WHEN a video is uploaded in two parts
    upload = s3.create_multipart_upload(Bucket="multipart-videos", Key="class.mp4")["UploadId"]
    parts = [{"PartNumber": n, "ETag": s3.upload_part(
        Bucket="multipart-videos", Key="class.mp4", UploadId=upload, PartNumber=n,
        Body=body)["ETag"]} for n, body in ((1, b"a" * 5 * 2**20), (2, b"b" * 1000))]
    s3.complete_multipart_upload(Bucket="multipart-videos", Key="class.mp4", UploadId=upload,
                                 MultipartUpload={"Parts": parts})
    # THEN one event says so, CompleteMultipartUpload (moto alone also sent an ObjectCreated:Put)
    events: list[str] = []
    wait_for(lambda: events.extend(
        r["eventName"] for m in sqs.receive_message(
            QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1).get("Messages", [])
        for r in json.loads(m["Body"]).get("Records", [])) or len(events) >= 1,
        timeout_s=10, what="the upload's event")
    time.sleep(1.5)  # a second event would be queued by now
    events += [r["eventName"] for m in sqs.receive_message(
        QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1).get("Messages", [])
        for r in json.loads(m["Body"]).get("Records", [])]
    assert events == ["ObjectCreated:CompleteMultipartUpload"]
    # AND the object is whole, and a plain upload still sends its Put event
    assert s3.head_object(Bucket="multipart-videos", Key="class.mp4")["ContentLength"] == (
        5 * 2**20 + 1000)
    s3.put_object(Bucket="multipart-videos", Key="one.mp4", Body=b"x")
    got = wait_for(lambda: sqs.receive_message(QueueUrl=url, WaitTimeSeconds=1).get("Messages"),
                   timeout_s=10, what="the put's event")
    assert json.loads(got[0]["Body"])["Records"][0]["eventName"] == "ObjectCreated:Put"
