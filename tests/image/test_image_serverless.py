"""Serverless mode with the function run from its image: S3 invokes the Lambda service
asynchronously, and the image (under the Runtime API) writes each clip's CSV; no daemon runs."""

from __future__ import annotations

from pathlib import Path

import pytest
from polling import wait_for

from localcloud.cloud import LocalCloud
from openstack_handler.demos.serverless import csv_key
from openstack_handler.provisioning.spec import ResourceSpec

pytestmark = pytest.mark.integration


def test_two_course_clips_get_their_csvs_from_the_image_with_no_daemon(
        function_image: str, course_data: Path, course_records: dict[str, str],
        tmp_path: Path) -> None:
    # GIVEN the local cloud in serverless mode, the function from the image
    resources = ResourceSpec(prefix="slsimg", mode="serverless", url_auth_type="NONE")
    with LocalCloud(gallery=course_data / "encoding", students=course_data / "student_data.json",
                    resources=resources, camera=False, concurrency=1, work_dir=tmp_path / "cloud",
                    image=function_image) as cloud:
        s3 = cloud.session().client("s3")
        # WHEN two clips are uploaded, one of them under a key S3 encodes
        uploads = {"test_2.mp4": "test_2.mp4", "my dir/clip ü+1.mp4": "test_7.mp4"}
        for key, video in uploads.items():
            s3.upload_file(str(course_data / "videos" / video), cloud.provisioned.input_bucket, key)

        def csv(key: str) -> str | None:
            try:
                return str(s3.get_object(Bucket=cloud.provisioned.output_bucket,
                                         Key=csv_key(key))["Body"].read().decode())
            except s3.exceptions.NoSuchKey:
                return None

        # THEN each gets its course record from the image's function, one invocation each
        for key, video in uploads.items():
            text = wait_for(lambda k=key: csv(k), timeout_s=180, interval_s=0.5,
                            what=f"{csv_key(key)} in the output bucket")
            assert text.splitlines()[0] == course_records[video], (key, text)
        stats = cloud.function_stats()
        assert stats["invocations"] == len(uploads) and stats.get("events_failed", 0) == 0
        # AND no message went to the daemon's input queue
        attrs = cloud.session().client("sqs").get_queue_attributes(
            QueueUrl=cloud.provisioned.input_queue_url,
            AttributeNames=["ApproximateNumberOfMessages"])["Attributes"]
        assert attrs["ApproximateNumberOfMessages"] == "0"
