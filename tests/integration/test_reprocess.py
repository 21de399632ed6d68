"""Having a video processed again after deleting its result (issue 18, item 2), for real."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from daemon_helpers import json_log_lines, status_counters
from integration_helpers import REPO, Pipeline
from polling import wait_for

pytestmark = pytest.mark.integration


def test_a_reupload_is_dropped_visibly_and_forget_has_it_processed_again(
        pipeline: Pipeline, course_data: Path, course_records: dict[str, str]) -> None:
    video, key = course_data / "videos" / "test_6.mp4", "again/test_6.mp4"
    result = pipeline.results / "again" / "test_6.csv"
    before = pipeline.invocations()
    with pipeline.daemon():
        # GIVEN a processed video whose result the user deleted
        pipeline.s3.upload_file(str(video), pipeline.bucket, key)
        wait_for(result.exists, timeout_s=120, what="the first result")
        result.unlink()
        # WHEN the same file is uploaded again
        pipeline.s3.upload_file(str(video), pipeline.bucket, key)
        # THEN it is dropped, and the log line says why and what to do
        dropped = wait_for(lambda: [ln for ln in json_log_lines(pipeline.log_path.read_text())
                                    if ln.get("event") == "video.duplicate_dropped"],
                           timeout_s=30, what="the duplicate's log line")
        assert dropped[0]["key"] == key and "already processed" in dropped[0]["why"]
        assert f"openstack-handler forget --config {pipeline.config} {key}" \
            in dropped[0]["to_reprocess"]
        status = subprocess.run(
            [sys.executable, "-m", "openstack_handler", "status", "--config",
             str(pipeline.config)], cwd=REPO, env=pipeline.daemon_env(), capture_output=True,
            text=True, timeout=60, check=True).stdout
        assert status_counters(status, "duplicates dropped") == {
            "duplicates dropped (see `forget`)": "1"}
        assert "last duplicate dropped: " in status and f"s3://{pipeline.bucket}/{key}" in status
        # AND after `forget` (the daemon still running), the next upload is processed again
        forget = subprocess.run(
            [sys.executable, "-m", "openstack_handler", "forget", "--config",
             str(pipeline.config), key], cwd=REPO, env=pipeline.daemon_env(),
            capture_output=True, text=True, timeout=60, check=False)
        assert forget.returncode == 0 and "forgotten" in forget.stdout, forget.stderr
        pipeline.s3.upload_file(str(video), pipeline.bucket, key)
        wait_for(result.exists, timeout_s=120, what="the result of the forgotten video")
    assert result.read_text().splitlines()[0] == course_records["test_6.mp4"]
    assert pipeline.invocations() - before == 2
