"""End to end on the local cloud: the course clips, duplicate deliveries and hostile keys."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote_plus

import pytest
from daemon_helpers import json_log_lines, status_counters
from integration_helpers import REPO, Pipeline
from polling import wait_for
from runtime_watch import run_watched

from openstack_handler.daemon.results_store import safe_relative_path
from openstack_handler.demos.video import read_expected

pytestmark = pytest.mark.integration


def test_local_demo_command_gives_the_course_records_for_all_eight_clips(
        course_data: Path, course_records: dict[str, str], tmp_path: Path) -> None:
    # GIVEN the course's 8 clips, gallery and student table
    expected = tmp_path / "expected.csv"
    expected.write_text("video,names\n" + "".join(
        f"{video},{row.split(',')[0]}\n" for video, row in course_records.items()))
    results = tmp_path / "results"
    scratch = tmp_path / "tmp"  # the demo's TMPDIR: what it leaves behind lands here
    scratch.mkdir()
    # WHEN the user runs the main job through the real CLI
    proc, runtimes = run_watched(
        [sys.executable, "-m", "openstack_handler", "local", "demo",
         "--videos", str(course_data / "videos"), "--gallery", str(course_data / "encoding"),
         "--students", str(course_data / "student_data.json"), "--results", str(results),
         "--expected", str(expected)],
        timeout=300, cwd=REPO, env={**os.environ, "TMPDIR": str(scratch)})
    # THEN it succeeds, and every clip has the course's record as its first (most prominent) row
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # AND its two workers ran the runtime the image ships: no process of it loaded torch
    runtimes.assert_onnx_only(at_least=2)
    assert "8/8 videos have results" in proc.stdout
    # AND its scratch folder is gone (issue 18, item 9)
    assert "logs removed (--keep-work-dir keeps them)" in proc.stdout
    assert list(scratch.iterdir()) == []
    for video, row in course_records.items():
        csv_text = (results / (Path(video).stem + ".csv")).read_text()
        assert csv_text.splitlines()[0] == row, (video, csv_text)
    assert sorted(p.name for p in results.iterdir()) == sorted(
        Path(v).stem + ".csv" for v in course_records)
    assert read_expected(expected)["test_0.mp4"] == ["president_trump"]


def test_a_demo_with_a_wrong_result_keeps_its_scratch_folder_and_says_where(
        course_data: Path, tmp_path: Path) -> None:
    videos, scratch = tmp_path / "videos", tmp_path / "tmp"
    videos.mkdir()
    scratch.mkdir()
    (videos / "test_0.mp4").write_bytes((course_data / "videos" / "test_0.mp4").read_bytes())
    expected = tmp_path / "expected.csv"
    expected.write_text("video,names\ntest_0.mp4,somebody_else\n")
    proc = subprocess.run(
        [sys.executable, "-m", "openstack_handler", "local", "demo", "--videos", str(videos),
         "--gallery", str(course_data / "encoding"), "--students",
         str(course_data / "student_data.json"), "--results", str(tmp_path / "results"),
         "--expected", str(expected), "--function-concurrency", "1"],
        check=False, capture_output=True, text=True, timeout=300, cwd=REPO,
        env={**os.environ, "TMPDIR": str(scratch)})
    assert proc.returncode == 1 and "WRONG" in proc.stdout, proc.stdout + proc.stderr
    (kept,) = scratch.iterdir()
    assert kept.name.startswith("openstack-handler-demo-") and (kept / "daemon.log").exists()
    assert f"logs kept in {kept}" in proc.stdout


def test_redelivered_duplicated_and_test_events_cause_no_duplicate_work(
        pipeline: Pipeline, course_data: Path, course_records: dict[str, str]) -> None:
    p = pipeline.cloud.provisioned
    # GIVEN a real upload's S3 event, captured from the queue before any daemon runs ...
    pipeline.s3.upload_file(str(course_data / "videos" / "test_7.mp4"), pipeline.bucket,
                            "dup/test_7.mp4")
    received = wait_for(lambda: pipeline.sqs.receive_message(
        QueueUrl=p.input_queue_url, WaitTimeSeconds=1, VisibilityTimeout=0).get("Messages"),
        timeout_s=10, what="the upload's event")
    body = received[0]["Body"]
    assert unquote_plus(json.loads(body)["Records"][0]["s3"]["object"]["key"]) == "dup/test_7.mp4"
    # ... the same event delivered twice more, and a test event
    for _ in range(2):
        pipeline.sqs.send_message(QueueUrl=p.input_queue_url, MessageBody=body)
    pipeline.sqs.send_message(QueueUrl=p.input_queue_url, MessageBody=json.dumps(
        {"Service": "Amazon S3", "Event": "s3:TestEvent", "Bucket": pipeline.bucket}))
    # ... and a multipart upload, for which moto emits more than one event
    upload = pipeline.s3.create_multipart_upload(Bucket=pipeline.bucket, Key="dup/test_8.mp4")
    part = pipeline.s3.upload_part(
        Bucket=pipeline.bucket, Key="dup/test_8.mp4", UploadId=upload["UploadId"], PartNumber=1,
        Body=(course_data / "videos" / "test_8.mp4").read_bytes())
    pipeline.s3.complete_multipart_upload(
        Bucket=pipeline.bucket, Key="dup/test_8.mp4", UploadId=upload["UploadId"],
        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]})
    before = pipeline.invocations()
    # WHEN the daemon drains everything
    with pipeline.daemon():
        wait_for(lambda: pipeline.queue_idle(p.input_queue_url)
                 and pipeline.queue_idle(p.output_queue_url)
                 and len(pipeline.result_files()) == 2, timeout_s=90, what="queues drained")
    # THEN each video was recognised exactly once and has one correct result file
    assert pipeline.invocations() - before == 2
    assert [f.relative_to(pipeline.results).as_posix() for f in pipeline.result_files()] == [
        "dup/test_7.csv", "dup/test_8.csv"]
    assert (pipeline.results / "dup/test_7.csv").read_text().splitlines()[0] == \
        course_records["test_7.mp4"]
    assert (pipeline.results / "dup/test_8.csv").read_text().splitlines()[0] == \
        course_records["test_8.mp4"]


HOSTILE_KEYS = [
    "class 2026/week 1/my clip (final).mp4",
    "ünïcödé/видео 視頻.mp4",
    "plus+and%20percent+.mp4",
    "../../escape attempt.mp4",
    "a/./b/../../c.mp4",
]


def test_hostile_keys_land_inside_the_results_dir_with_correct_results(
        pipeline: Pipeline, course_data: Path, course_records: dict[str, str]) -> None:
    # GIVEN uploads whose keys hold spaces, unicode, '+', '%' and '..'
    clip = course_data / "videos" / "test_0.mp4"
    for key in HOSTILE_KEYS:
        pipeline.s3.upload_file(str(clip), pipeline.bucket, key)
    # WHEN the daemon processes them
    with pipeline.daemon():
        wait_for(lambda: len(pipeline.result_files()) == len(HOSTILE_KEYS), timeout_s=90,
                 what="a result per hostile key")
    # THEN every result is inside the results dir, at the key's own (neutralised) path
    root = pipeline.results.resolve()
    for key in HOSTILE_KEYS:
        rel = safe_relative_path(key)
        path = pipeline.results / rel.parent / (rel.name + ".csv")
        assert path.resolve().is_relative_to(root), key
        assert path.read_text().splitlines()[0] == course_records["test_0.mp4"], key
    names = {f.relative_to(pipeline.results).as_posix() for f in pipeline.result_files()}
    assert "class 2026/week 1/my clip (final).csv" in names
    assert "ünïcödé/видео 視頻.csv" in names
    assert "plus+and%20percent+.csv" in names
    assert all(".." not in Path(n).parts for n in names)
    assert not list(root.parent.glob("escape attempt*"))


def _log_lines(path: Path) -> list[dict]:
    return json_log_lines(path.read_text(errors="replace"))


def test_two_replicas_share_the_queues_the_state_and_the_results_dir(
        pipeline: Pipeline, course_data: Path, course_records: dict[str, str]) -> None:
    # GIVEN two daemons on one machine, as systemd's handler@1 and handler@2 run them: the same
    # settings (so one state DB and one results dir), each with its replica name
    videos = sorted((course_data / "videos").glob("*.mp4"))
    before = pipeline.invocations()
    with pipeline.daemon(OPENSTACK_HANDLER_REPLICA="1"), \
            pipeline.daemon(OPENSTACK_HANDLER_REPLICA="2"):
        wait_for(lambda: sum(ln.get("event") == "handler.ready"
                             for ln in _log_lines(pipeline.log_path)) == 2,
                 timeout_s=60, what="both replicas ready")
        # WHEN the course clips are uploaded
        for video in videos:
            pipeline.s3.upload_file(str(video), pipeline.bucket, f"replicas/{video.name}")
        wait_for(lambda: len(pipeline.result_files()) == len(videos), timeout_s=120,
                 interval_s=0.5, what="a result per clip")
        # AND one clip is uploaded again, unchanged (same eTag)
        pipeline.s3.upload_file(str(videos[0]), pipeline.bucket, f"replicas/{videos[0].name}")
        wait_for(lambda: sum(ln.get("event") == "video.duplicate_dropped"
                             for ln in _log_lines(pipeline.log_path)) == 1,
                 timeout_s=30, what="the unchanged upload dropped as a duplicate")
    # THEN every clip has its correct result, and no temp file is left behind
    for video in videos:
        rows = (pipeline.results / "replicas" / f"{video.stem}.csv").read_text().splitlines()
        assert rows[0] == course_records[video.name], video.name
    assert [f.name for f in pipeline.result_files() if f.name.startswith(".tmp-")] == []
    # AND both replicas did work, each log line naming its replica
    processed = [ln for ln in _log_lines(pipeline.log_path) if ln.get("event") == "video.processed"]
    assert len(processed) == len(videos)
    assert {ln["replica"] for ln in processed} == {"1", "2"}, processed
    # AND the re-upload was recognised through the shared state DB, whichever replica took it
    assert pipeline.invocations() - before == len(videos)
    status = subprocess.run(
        [sys.executable, "-m", "openstack_handler", "status", "--config", str(pipeline.config)],
        cwd=REPO, env=pipeline.daemon_env(), capture_output=True, text=True, timeout=60,
        check=True).stdout
    counters = status_counters(status, "videos processed", "duplicates dropped")
    assert counters == {"videos processed": str(len(videos)),
                        "duplicates dropped (see `forget`)": "1"}, status
