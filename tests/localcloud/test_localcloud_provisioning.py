"""openstack_handler.provisioning against a real moto server (S3, SQS, DynamoDB, IAM, Lambda)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import boto3
import pytest

from openstack_handler.provisioning.aws import (
    describe_changes,
    function_policy,
    load_student_records,
    provision,
    provision_function,
    seed_students,
)
from openstack_handler.provisioning.camera import (
    PUBLIC_INVOKE_SID,
    PUBLIC_URL_SID,
    camera_environment,
    camera_policies,
    provision_camera,
    provision_camera_functions,
)
from openstack_handler.provisioning.spec import ResourceSpec

pytestmark = pytest.mark.integration

STUDENTS = [{"id": 1, "name": "mr_bean", "major": "lawyer", "year": "freshmen"},
            {"id": 2, "name": "president_biden", "major": "history", "year": "sophomore"}]
IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/face-recognition:1"


@pytest.fixture()
def spec() -> ResourceSpec:
    return ResourceSpec(prefix="unit", function_timeout_s=30)


def _attributes(session: boto3.session.Session, url: str) -> dict[str, str]:
    return session.client("sqs").get_queue_attributes(
        QueueUrl=url, AttributeNames=["All"])["Attributes"]


def _receive_all(session: boto3.session.Session, url: str, *, want: int) -> list[dict[str, Any]]:
    sqs, bodies = session.client("sqs"), []
    deadline = time.monotonic() + 10
    while len(bodies) < want and time.monotonic() < deadline:
        for message in sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10,
                                           WaitTimeSeconds=1).get("Messages", []):
            bodies.append(json.loads(message["Body"]))
    return bodies


def test_spec_derives_names_and_visibility_from_the_function_timeout() -> None:
    spec = ResourceSpec(prefix="demo", function_timeout_s=60)
    assert (spec.input_bucket, spec.input_dlq, spec.students_table) == (
        "demo-input", "demo-input-dlq", "demo-students")
    assert spec.visibility_timeout_s == 360 and spec.max_receive_count == 5
    with pytest.raises(ValueError, match="visibility_timeout_s"):
        ResourceSpec(prefix="demo", function_timeout_s=60, visibility_timeout_s=300)
    with pytest.raises(ValueError, match="bucket name"):
        ResourceSpec(prefix="Bad_Prefix")


def test_second_run_changes_nothing(boto_session: boto3.session.Session,
                                    spec: ResourceSpec) -> None:
    first = provision(boto_session, spec)
    assert first.changed
    assert {c.kind for c in first.changes} == {"sqs queue", "s3 bucket", "s3 notification",
                                               "s3 lifecycle", "dynamodb table", "dynamodb ttl"}
    second = provision(boto_session, spec)
    assert second.changes == () and describe_changes(second.changes) == "unchanged"
    assert second == first  # same URLs, ARNs and names


def test_camera_tracks_table_is_keyed_by_camera_and_sequence_and_expires(
        boto_session: boto3.session.Session, spec: ResourceSpec) -> None:
    out = provision(boto_session, spec)
    ddb = boto_session.client("dynamodb")
    table = ddb.describe_table(TableName=out.camera_tracks_table)["Table"]
    assert table["KeySchema"] == [{"AttributeName": "camera_id", "KeyType": "HASH"},
                                  {"AttributeName": "sequence", "KeyType": "RANGE"}]
    assert table["TableArn"] == out.camera_tracks_table_arn
    ttl = ddb.describe_time_to_live(TableName=out.camera_tracks_table)["TimeToLiveDescription"]
    assert (ttl["TimeToLiveStatus"], ttl["AttributeName"]) == ("ENABLED", "expires_at")
    # TTL switched off by hand is switched on again, and only that is changed
    ddb.update_time_to_live(TableName=out.camera_tracks_table, TimeToLiveSpecification={
        "Enabled": False, "AttributeName": "expires_at"})
    [change] = provision(boto_session, spec).changes
    assert (change.kind, change.name) == ("dynamodb ttl", out.camera_tracks_table)
    # the camera functions that judge faces are told where it is; detection is not
    env = {name: camera_environment(spec, out, name, "/g") for name in spec.camera_functions()}
    assert {n: e.get("CAMERA_TRACKS_TABLE") for n, e in env.items()} == {
        spec.frame_function_name: out.camera_tracks_table,
        spec.detect_function_name: None,
        spec.recognize_function_name: out.camera_tracks_table}


def test_queues_have_redrive_and_visibility(boto_session: boto3.session.Session,
                                            spec: ResourceSpec) -> None:
    out = provision(boto_session, spec)
    input_attrs = _attributes(boto_session, out.input_queue_url)
    assert int(input_attrs["VisibilityTimeout"]) >= 6 * spec.function_timeout_s
    redrive = json.loads(input_attrs["RedrivePolicy"])
    assert redrive["deadLetterTargetArn"] == out.input_dlq_arn
    assert int(redrive["maxReceiveCount"]) == 5
    output_redrive = json.loads(_attributes(boto_session, out.output_queue_url)["RedrivePolicy"])
    assert output_redrive["deadLetterTargetArn"] == out.output_dlq_arn
    policy = json.loads(input_attrs["Policy"])["Statement"][0]
    assert policy["Principal"] == {"Service": "s3.amazonaws.com"}
    assert policy["Action"] == "sqs:SendMessage" and policy["Resource"] == out.input_queue_arn
    assert policy["Condition"]["ArnLike"]["aws:SourceArn"] == f"arn:aws:s3:::{out.input_bucket}"


def test_drift_is_reported_and_repaired(boto_session: boto3.session.Session,
                                        spec: ResourceSpec) -> None:
    out = provision(boto_session, spec)
    boto_session.client("sqs").set_queue_attributes(QueueUrl=out.input_queue_url,
                                                    Attributes={"VisibilityTimeout": "30"})
    again = provision(boto_session, spec)
    # (moto also drops the queue Policy on a SetQueueAttributes without it: repaired as well)
    [change] = again.changes
    assert (change.kind, change.name, change.action) == ("sqs queue", "unit-input", "updated")
    assert "VisibilityTimeout" in change.detail
    assert _attributes(boto_session, out.input_queue_url)["VisibilityTimeout"] == "180"
    assert provision(boto_session, spec).changes == ()


def test_upload_to_input_bucket_lands_on_input_queue(boto_session: boto3.session.Session,
                                                     spec: ResourceSpec) -> None:
    out = provision(boto_session, spec)
    boto_session.client("s3").put_object(Bucket=out.input_bucket, Key="dir/my clip.mp4",
                                         Body=b"not really a video")
    bodies = _receive_all(boto_session, out.input_queue_url, want=2)
    events = [b for b in bodies if "Records" in b]
    assert [b.get("Event") for b in bodies if "Records" not in b] == ["s3:TestEvent"]
    record = events[0]["Records"][0]
    assert record["eventName"].startswith("ObjectCreated:")
    assert record["s3"]["bucket"]["name"] == out.input_bucket
    assert record["s3"]["object"]["key"] in ("dir/my+clip.mp4", "dir%2Fmy+clip.mp4")


def test_seed_students_from_course_file(boto_session: boto3.session.Session,
                                        spec: ResourceSpec, tmp_path: Path) -> None:
    out = provision(boto_session, spec)
    path = tmp_path / "student_data.json"
    path.write_text(json.dumps(STUDENTS))
    assert seed_students(boto_session, out.students_table, load_student_records(path)) == 2
    item = boto_session.client("dynamodb").get_item(
        TableName=out.students_table, Key={"name": {"S": "president_biden"}})["Item"]
    assert item["major"] == {"S": "history"} and item["year"] == {"S": "sophomore"}
    # WHEN it seeds again, nothing is written; a changed record is written alone
    assert seed_students(boto_session, out.students_table, load_student_records(path)) == 0
    path.write_text(json.dumps([{**STUDENTS[0], "year": "senior"}, *STUDENTS[1:]]))
    assert seed_students(boto_session, out.students_table, load_student_records(path)) == 1
    table = boto_session.client("dynamodb").describe_table(TableName=out.students_table)["Table"]
    assert table["KeySchema"] == [{"AttributeName": "name", "KeyType": "HASH"}]
    assert table["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"


def test_function_policy_is_least_privilege(boto_session: boto3.session.Session,
                                            spec: ResourceSpec) -> None:
    out = provision(boto_session, spec)
    statements = {s["Sid"]: s for s in function_policy(spec, out)["Statement"]}
    assert statements["ReadInputObjects"]["Resource"] == "arn:aws:s3:::unit-input/*"
    assert statements["WriteOutputObjects"] == {
        "Sid": "WriteOutputObjects", "Effect": "Allow", "Action": "s3:PutObject",
        "Resource": "arn:aws:s3:::unit-output/*"}
    assert statements["SendResults"]["Resource"] == [out.output_queue_arn, out.response_queue_arn]
    assert statements["ReadStudents"]["Action"] == ["dynamodb:GetItem", "dynamodb:BatchGetItem"]
    assert statements["ReadStudents"]["Resource"] == out.students_table_arn
    actions = {a for s in statements.values() for a in
               ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])}
    assert not any(a.endswith("*") for a in actions)


def test_provision_function_creates_then_converges(boto_session: boto3.session.Session,
                                                   spec: ResourceSpec) -> None:
    # moto stores Lambda functions and IAM roles without Docker (it just cannot run them)
    out = provision(boto_session, spec)
    created = provision_function(boto_session, spec, IMAGE, "/var/task/encoding",
                                 provisioned=out)
    assert [c.kind for c in created.changes] == ["iam role", "iam role policy", "lambda function"]
    config = boto_session.client("lambda").get_function(FunctionName=spec.function_name)
    assert config["Configuration"]["PackageType"] == "Image"
    assert config["Configuration"]["Timeout"] == 30
    assert config["Configuration"]["Role"] == created.role_arn
    assert config["Configuration"]["Environment"]["Variables"] == {
        "GALLERY_PATH": "/var/task/encoding", "STUDENTS_TABLE": out.students_table,
        "OUTPUT_BUCKET": out.output_bucket, "OUTPUT_QUEUE_URL": out.output_queue_url,
        "RESPONSE_QUEUE_URL": out.response_queue_url}
    policy = boto_session.client("iam").get_role_policy(
        RoleName=f"{spec.function_name}-role", PolicyName="least-privilege")["PolicyDocument"]
    assert policy == function_policy(spec, out)
    assert provision_function(boto_session, spec, IMAGE, "/var/task/encoding",
                              provisioned=out).changes == ()
    updated = provision_function(boto_session, spec, IMAGE.replace(":1", ":2"),
                                 "/var/task/encoding", provisioned=out)
    assert [c.action for c in updated.changes] == ["updated"]


def test_the_camera_path_s_queues_and_bucket(boto_session: boto3.session.Session) -> None:
    spec = ResourceSpec(prefix="cam", camera_function_timeout_s=20)
    out = provision(boto_session, spec)
    request = _attributes(boto_session, out.request_queue_url)
    # the request queue: visibility six times the camera functions' timeout, a DLQ behind it
    assert request["VisibilityTimeout"] == "120"
    assert json.loads(request["RedrivePolicy"]) == {"deadLetterTargetArn": out.request_dlq_arn,
                                                    "maxReceiveCount": 5}
    # the response queue: answers kept an hour; one nobody takes moves to its DLQ
    response = _attributes(boto_session, out.response_queue_url)
    assert response["MessageRetentionPeriod"] == "3600"
    assert json.loads(response["RedrivePolicy"]) == {
        "deadLetterTargetArn": out.response_dlq_arn, "maxReceiveCount": 1000}
    rules = boto_session.client("s3").get_bucket_lifecycle_configuration(
        Bucket=out.frames_bucket)["Rules"]
    assert [(r["ID"], r["Filter"], r["Expiration"]) for r in rules] == [
        ("expire-face-crops", {"Prefix": "crops/"}, {"Days": 1})]
    with pytest.raises(ValueError, match="url_auth_type"):
        ResourceSpec(prefix="cam", url_auth_type="PUBLIC")
    with pytest.raises(ValueError, match="request_batching_window_s"):
        ResourceSpec(prefix="cam", request_batch_size=50)


def test_camera_policies_are_least_privilege(boto_session: boto3.session.Session) -> None:
    spec = ResourceSpec(prefix="cam")
    out = provision(boto_session, spec)
    policies = camera_policies(spec, out)

    def actions(name: str) -> set[tuple[str, str]]:
        found = set()
        for s in policies[name]["Statement"]:
            for action in [s["Action"]] if isinstance(s["Action"], str) else s["Action"]:
                for resource in [s["Resource"]] if isinstance(s["Resource"], str) \
                        else s["Resource"]:
                    if not action.startswith("logs:"):
                        found.add((action, resource))
        return found

    frames = f"arn:aws:s3:::{out.frames_bucket}/*"
    tracks = {("dynamodb:Query", out.camera_tracks_table_arn),
              ("dynamodb:PutItem", out.camera_tracks_table_arn)}
    # the one-stage function also reads the web tier's images (in the input bucket)
    assert actions("camera-frame") == {
        ("s3:GetObject", frames), ("s3:GetObject", f"arn:aws:s3:::{out.input_bucket}/*"),
        ("dynamodb:GetItem", out.students_table_arn),
        ("dynamodb:BatchGetItem", out.students_table_arn), *tracks}
    assert tracks <= actions("camera-recognize")
    assert actions("camera-detect") == {
        ("s3:GetObject", frames), ("s3:PutObject", frames),
        ("sqs:SendMessage", out.request_queue_arn), ("sqs:SendMessage", out.response_queue_arn)}
    assert ("sqs:ReceiveMessage", out.request_queue_arn) in actions("camera-recognize")
    assert ("sqs:DeleteMessage", out.request_queue_arn) in actions("camera-recognize")
    assert not any(a.endswith("*") for name in policies for a, _ in actions(name))


def test_camera_lambda_side_converges_on_moto(boto_session: boto3.session.Session) -> None:
    # GIVEN the camera functions (moto stores them; it cannot run them)
    spec = ResourceSpec(prefix="cam", url_auth_type="NONE")
    out = provision(boto_session, spec)
    made = provision_camera_functions(boto_session, spec, IMAGE, "/var/task/encoding", out)
    lam = boto_session.client("lambda")
    commands = {name: lam.get_function(FunctionName=name)["Configuration"]
                ["ImageConfigResponse"]["ImageConfig"]["Command"]
                for name in spec.camera_functions()}
    assert commands == {"camera-frame": ["lambda_image.handlers.frame_handler"],
                        "camera-detect": ["lambda_image.handlers.detect_handler"],
                        "camera-recognize": ["lambda_image.handlers.recognize_handler"]}
    assert all(m.changed for m in made)
    env = lam.get_function(FunctionName="camera-detect")["Configuration"]["Environment"]
    assert env["Variables"]["REQUEST_QUEUE_URL"] == out.request_queue_url
    env = lam.get_function(FunctionName="camera-frame")["Configuration"]["Environment"]
    assert "RESPONSE_QUEUE_URL" not in env["Variables"]  # it answers over HTTP only
    # WHEN the URLs, permissions and trigger are applied
    camera = provision_camera(boto_session, spec, out)
    kinds = sorted(c.kind for c in camera.changes)
    assert kinds == ["event source mapping", "function url", "function url",
                     *["lambda permission"] * 4]
    policy = json.loads(lam.get_policy(FunctionName="camera-frame")["Policy"])
    assert {s["Sid"] for s in policy["Statement"]} == {PUBLIC_URL_SID, PUBLIC_INVOKE_SID}
    (mapping,) = lam.list_event_source_mappings(
        EventSourceArn=out.request_queue_arn)["EventSourceMappings"]
    assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert mapping["BatchSize"] == 10
    # THEN a second run changes nothing
    assert provision_camera(boto_session, spec, out).changes == ()
    assert all(not m.changed for m in provision_camera_functions(
        boto_session, spec, IMAGE, "/var/task/encoding", out))
    # AND back to AWS_IAM: the URLs change auth type and the public statements go
    private = ResourceSpec(prefix="cam", url_auth_type="AWS_IAM")
    changed = provision_camera(boto_session, private, out)
    assert sorted((c.kind, c.action) for c in changed.changes) == [
        ("function url", "updated"), ("function url", "updated"),
        *[("lambda permission", "removed")] * 4]
    assert lam.get_function_url_config(FunctionName="camera-detect")["AuthType"] == "AWS_IAM"
    assert provision_camera(boto_session, private, out).changes == ()
