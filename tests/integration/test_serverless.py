"""Serverless mode on the local cloud, end to end: the input bucket invokes the real function
(Event invocations from moto's S3 to our Lambda service), no daemon runs, and the CSVs land in
the output bucket; Lambda's retries and the on-failure queue with the real function behind a
failing gate; `local demo --serverless` through the real CLI."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from integration_helpers import REPO
from polling import wait_for
from runtime_watch import run_watched

from localcloud.cloud import LocalCloud
from openstack_handler.demos.daemon_config import write_daemon_config
from openstack_handler.demos.serverless import csv_key
from openstack_handler.provisioning.spec import ResourceSpec

pytestmark = pytest.mark.integration

#: Lambda's retry minutes as 0.6 s and 1.2 s
SCALE = 0.01
HOSTILE_KEY = "my dir/clip ü+1 (2).mp4"


def _cloud(course_data: Path, work: Path, **kwargs: Any) -> LocalCloud:
    return LocalCloud(gallery=course_data / "encoding", students=course_data / "student_data.json",
                      resources=ResourceSpec(prefix="sls", mode="serverless",
                                             url_auth_type="NONE"),
                      camera=False, concurrency=2, work_dir=work, **kwargs)


@pytest.fixture(scope="module")
def serverless_cloud(course_data: Path,
                     tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCloud]:
    with _cloud(course_data, tmp_path_factory.mktemp("serverless")) as cloud:
        yield cloud


def _csv(cloud: LocalCloud, key: str) -> str | None:
    s3 = cloud.session().client("s3")
    try:
        body = s3.get_object(Bucket=cloud.provisioned.output_bucket, Key=csv_key(key))["Body"]
    except s3.exceptions.NoSuchKey:
        return None
    return str(body.read().decode())


def _depth(cloud: LocalCloud, url: str) -> int:
    attrs = cloud.session().client("sqs").get_queue_attributes(
        QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages",
                                      "ApproximateNumberOfMessagesNotVisible"])["Attributes"]
    return sum(int(v) for v in attrs.values())


def test_the_course_clips_give_their_csvs_with_no_daemon(
        serverless_cloud: LocalCloud, course_data: Path,
        course_records: dict[str, str]) -> None:
    cloud = serverless_cloud
    s3 = cloud.session().client("s3")
    bucket = cloud.provisioned.input_bucket
    # WHEN the 8 course clips, and one of them under a key with spaces, unicode and '+', are
    # uploaded (no daemon runs: nothing reads the input queue)
    uploads = {video: video for video in course_records}
    uploads[HOSTILE_KEY] = "test_0.mp4"
    for key, video in uploads.items():
        s3.upload_file(str(course_data / "videos" / video), bucket, key)
    # THEN each has its CSV in the output bucket, the course's record first
    for key, video in uploads.items():
        text = wait_for(lambda k=key: _csv(cloud, k), timeout_s=240, interval_s=0.5,
                        what=f"{csv_key(key)} in the output bucket")
        assert text.splitlines()[0] == course_records[video], (key, text)
    listed = s3.list_objects_v2(Bucket=cloud.provisioned.output_bucket)["Contents"]
    assert sorted(o["Key"] for o in listed) == sorted(csv_key(k) for k in uploads)
    # AND the input bucket told the function only, not the queue
    assert _depth(cloud, cloud.provisioned.input_queue_url) == 0
    stats = cloud.function_stats()
    assert stats["events_queued"] >= len(uploads) and stats.get("events_failed", 0) == 0


def test_a_multipart_upload_runs_the_function_once(serverless_cloud: LocalCloud,
                                                   course_data: Path,
                                                   course_records: dict[str, str]) -> None:
    cloud = serverless_cloud
    s3 = cloud.session().client("s3")
    bucket, key = cloud.provisioned.input_bucket, "multipart/test_4.mp4"
    before = cloud.function_stats().get("invocations", 0)
    # WHEN a clip is uploaded as a multipart upload (the way the AWS CLI sends a large video)
    upload = s3.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    etag = s3.upload_part(Bucket=bucket, Key=key, UploadId=upload, PartNumber=1,
                          Body=(course_data / "videos" / "test_4.mp4").read_bytes())["ETag"]
    s3.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=upload,
                                 MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": etag}]})
    # THEN its CSV comes, from one invocation: S3 sends one CompleteMultipartUpload event
    text = wait_for(lambda: _csv(cloud, key), timeout_s=120, interval_s=0.5,
                    what=f"{csv_key(key)} in the output bucket")
    assert text.splitlines()[0] == course_records["test_4.mp4"]
    time.sleep(2)  # a second event would have run by now (one invocation takes ~0.1 s)
    assert cloud.function_stats()["invocations"] - before == 1


@pytest.mark.parametrize(("fail_times", "outcome"), [(2, "csv"), (-1, "failure queue")])
def test_lambdas_retries_with_the_real_function(course_data: Path, course_records: dict[str, str],
                                                tmp_path: Path, fail_times: int,
                                                outcome: str) -> None:
    attempts_dir = tmp_path / "attempts"
    attempts_dir.mkdir()
    # GIVEN the real function behind a gate that fails its first two attempts (or all of them)
    with _cloud(course_data, tmp_path / "cloud", handler="tests.integration.flaky_function:handler",
                extra_environment={"FAIL_TIMES": str(fail_times),
                                   "ATTEMPTS_DIR": str(attempts_dir)},
                async_time_scale=SCALE) as cloud:
        # WHEN a clip is uploaded
        cloud.session().client("s3").upload_file(
            str(course_data / "videos" / "test_1.mp4"), cloud.provisioned.input_bucket,
            HOSTILE_KEY)
        attempts_file = attempts_dir / hashlib.sha256(HOSTILE_KEY.encode()).hexdigest()
        sqs = cloud.session().client("sqs")
        if outcome == "csv":
            # THEN the third attempt wrote its one CSV
            text = wait_for(lambda: _csv(cloud, HOSTILE_KEY), timeout_s=120, interval_s=0.5,
                            what="the CSV after the retries")
            assert text.splitlines()[0] == course_records["test_1.mp4"]
            assert len(attempts_file.read_text().splitlines()) == 3
            assert _depth(cloud, cloud.provisioned.failure_queue_url) == 0
            listed = cloud.session().client("s3").list_objects_v2(
                Bucket=cloud.provisioned.output_bucket)["Contents"]
            assert [o["Key"] for o in listed] == [csv_key(HOSTILE_KEY)]
        else:
            # THEN after the first run and its two retries the event, with its error, is on the
            # failure queue, and there is no CSV
            def record() -> Any:
                got = sqs.receive_message(QueueUrl=cloud.provisioned.failure_queue_url,
                                          WaitTimeSeconds=1).get("Messages", [])
                return got[0] if got else None

            message = wait_for(record, timeout_s=120, interval_s=0, what="the failure record")
            sqs.change_message_visibility(QueueUrl=cloud.provisioned.failure_queue_url,
                                          ReceiptHandle=message["ReceiptHandle"],
                                          VisibilityTimeout=0)  # read here, left for redrive
            failed = json.loads(message["Body"])
            assert failed["requestContext"]["condition"] == "RetriesExhausted"
            assert failed["requestContext"]["approximateInvokeCount"] == 3
            [s3_record] = failed["requestPayload"]["Records"]
            assert s3_record["s3"]["object"]["key"] != HOSTILE_KEY  # encoded, as S3 sends it
            assert failed["responsePayload"]["errorMessage"] == (
                f"attempt 3 at {HOSTILE_KEY} fails on purpose")
            assert len(attempts_file.read_text().splitlines()) == 3
            assert _csv(cloud, HOSTILE_KEY) is None
            _redrive_the_failure_once_fixed(cloud, tmp_path, course_records["test_1.mp4"])


def _redrive_the_failure_once_fixed(cloud: LocalCloud, tmp_path: Path, record: str) -> None:
    """`status` shows the failure record; once the cause is fixed, `redrive --queue failed`
    runs its event through the function again, and the CSV comes."""
    config = write_daemon_config(cloud, tmp_path / "handler.toml", tmp_path / "results",
                                 tmp_path / "state")
    cli = [sys.executable, "-m", "openstack_handler"]
    env = {**os.environ, **cloud.client_env()}  # the keys the CLI signs with
    status = subprocess.run([*cli, "status", "--config", str(config)], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=60, check=False)
    assert status.returncode == 0, status.stdout + status.stderr
    [row] = [line.split() for line in status.stdout.splitlines() if line.startswith("failed ")]
    assert row[1:4] == ["1", "0", "0"] and "redrive --queue failed" in " ".join(row), row
    # WHEN the cause is fixed (the gate lets the next attempt through) and the CLI redrives
    lam = cloud.session().client("lambda")
    variables = lam.get_function_configuration(
        FunctionName=cloud.resources.function_name)["Environment"]["Variables"]
    lam.update_function_configuration(FunctionName=cloud.resources.function_name,
                                      Environment={"Variables": {**variables, "FAIL_TIMES": "3"}})
    done = subprocess.run([*cli, "redrive", "--config", str(config), "--queue", "failed"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "invoked face-recognition again with 1 event(s)" in done.stdout
    # THEN the video's CSV is written, and the failure queue is empty
    text = wait_for(lambda: _csv(cloud, HOSTILE_KEY), timeout_s=120, interval_s=0.5,
                    what="the CSV after the redrive")
    assert text.splitlines()[0] == record
    assert _depth(cloud, cloud.provisioned.failure_queue_url) == 0


def test_local_demo_serverless_command(course_data: Path, course_records: dict[str, str],
                                       tmp_path: Path) -> None:
    expected = tmp_path / "expected.csv"
    expected.write_text("video,names\n" + "".join(
        f"{video},{row.split(',')[0]}\n" for video, row in course_records.items()))
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    proc, runtimes = run_watched(
        [sys.executable, "-m", "openstack_handler", "local", "demo", "--serverless",
         "--videos", str(course_data / "videos"), "--gallery", str(course_data / "encoding"),
         "--students", str(course_data / "student_data.json"), "--expected", str(expected)],
        timeout=400, cwd=REPO, env={**os.environ, "TMPDIR": str(scratch)})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    runtimes.assert_onnx_only(at_least=1)
    assert "8/8 videos have results" in proc.stdout
    assert "serverless: S3 invoked the function, no daemon" in proc.stdout
    assert proc.stdout.count(" ok") >= 8
    assert list(scratch.iterdir()) == []
