"""The reliability tier: the real daemon process against one shared LocalCloud running the real
recognition function (2 warm workers), with fault injection; each test records a table row.

Set ``RELIABILITY_RESULTS=tests/reliability/RESULTS.md`` to write the table of a run there.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import boto3
import pytest
from botocore.config import Config
from queue_hygiene import video_path_queues
from reliability_helpers import CLIPS, Rig, Row

from localcloud.cloud import DUMMY_CREDENTIALS, LocalCloud
from openstack_handler.provisioning.spec import ResourceSpec

#: the function's timeout here: an injected timeout holds a worker this long.
FUNCTION_TIMEOUT_S = 4

_ROWS: list[Row] = []


@pytest.fixture(scope="session")
def rel_cloud(course_data: Path, tmp_path_factory: pytest.TempPathFactory
              ) -> Iterator[LocalCloud]:
    work = tmp_path_factory.mktemp("reliability-cloud")
    resources = ResourceSpec(prefix="rel", function_timeout_s=FUNCTION_TIMEOUT_S,
                             max_receive_count=10)
    with LocalCloud(gallery=course_data / "encoding", students=course_data / "student_data.json",
                    resources=resources, concurrency=2, work_dir=work) as cloud:
        yield cloud


@pytest.fixture(scope="session")
def expected_csv(rel_cloud: LocalCloud, course_data: Path,
                 course_records: dict[str, str]) -> dict[str, str]:
    """clip -> the exact CSV text the function gives it (invoked once per clip, directly), after
    checking its first row against the course's expected record."""
    s3 = boto3.client("s3", endpoint_url=rel_cloud.moto_url, region_name="us-east-1",
                      aws_access_key_id=DUMMY_CREDENTIALS["AWS_ACCESS_KEY_ID"],
                      aws_secret_access_key=DUMMY_CREDENTIALS["AWS_SECRET_ACCESS_KEY"])
    lam = boto3.client("lambda", endpoint_url=rel_cloud.lambda_url, region_name="us-east-1",
                       aws_access_key_id="testing", aws_secret_access_key="testing",
                       config=Config(read_timeout=120, retries={"total_max_attempts": 1}))
    bucket = rel_cloud.provisioned.input_bucket
    texts = {}
    for clip in CLIPS:
        key = f"baseline/{clip}"
        s3.upload_file(str(course_data / "videos" / clip), bucket, key)
        event = {"Records": [{"eventName": "ObjectCreated:Put", "s3": {
            "bucket": {"name": bucket}, "object": {"key": key, "eTag": "baseline"}}}]}
        response = lam.invoke(FunctionName=rel_cloud.resources.function_name,
                              Payload=json.dumps(event).encode())
        body = json.loads(response["Payload"].read())
        assert "FunctionError" not in response, body
        texts[clip] = body["results"][0]["csv"]
        assert texts[clip].splitlines()[0] == course_records[clip], (clip, texts[clip])
    return texts


@pytest.fixture()
def make_rig(rel_cloud: LocalCloud, expected_csv: dict[str, str],
             tmp_path: Path) -> Iterator[Callable[..., Rig]]:
    """Factory: a fresh view of the shared cloud (empty queues, no faults, maxReceiveCount 10)
    with the daemon settings given. At the end its daemons are killed, and the test fails if it
    left messages on the input or output queue; every queue is emptied for the next test."""
    rel_cloud.set_faults(None)
    shared = video_path_queues(rel_cloud)
    shared.begin()
    made: list[Rig] = []

    def factory(**settings: object) -> Rig:
        r = Rig(rel_cloud, tmp_path, expected_csv, **settings)
        r.set_max_receive_count(10)
        made.append(r)
        return r

    yield factory
    for r in made:
        r.kill_all()
    rel_cloud.set_faults(None)
    shared.end()


@pytest.fixture()
def record() -> Iterator[Row]:
    """The test fills in its row; it is kept only if the test passed its assertions."""
    row = Row(test="")
    started = time.monotonic()
    yield row
    row.seconds = round(time.monotonic() - started, 1)
    if row.test:
        _ROWS.append(row)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    target = os.environ.get("RELIABILITY_RESULTS")
    if not target or not _ROWS:
        return
    lines = [
        "# Reliability runs",
        "",
        (f"Written by `tests/reliability` on {datetime.now(UTC):%Y-%m-%d %H:%M UTC}: the real "
        "daemon process against the local cloud (moto server, the Lambda endpoint with fault "
        "injection, the real recognition function on 2 warm workers, course clips under distinct "
        "keys). Lost = a video without its exact expected result file; duplicates = a video with "
        "more than one result file, or handler runs beyond those the test allows."),
        "",
        ("| test | daemon runs | messages | faults injected | results lost | duplicates | "
        "seconds | notes |"),
        "|---|---:|---:|---|---:|---:|---:|---|",
    ]
    for r in _ROWS:
        lines.append(f"| {r.test} | {r.runs} | {r.messages} | {r.faults} | {r.lost} | "
                     f"{r.duplicates} | {r.seconds} | {r.notes} |")
    Path(target).write_text("\n".join(lines) + "\n", encoding="utf-8")
