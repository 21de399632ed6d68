"""`openstack-handler local demo --serverless`: the course's first Lambda generation on one machine.

Brings up the local cloud in serverless mode (the input bucket invokes the function, an Event
invocation per upload; no daemon runs), uploads every file of a folder, and waits for each
video's outcome where the function leaves it: its result message on the output queue (``ok``:
then ``<stem>.csv`` is read from the output bucket, the row names come from there; ``error``: a
file the function could not read), or its event on the failure queue once Lambda's retries are
used up. Prints the same table as the daemon demo.
"""

from __future__ import annotations

import csv
import json
import sys
import time
from dataclasses import replace
from pathlib import Path, PurePosixPath
from typing import IO, Any
from urllib.parse import unquote_plus

from localcloud.cloud import LocalCloud
from localcloud.workdir import WorkDir
from openstack_handler.demos.video import (
    DemoReport,
    VideoRun,
    _upload_all,
    read_expected,
    render_report,
)
from openstack_handler.provisioning.spec import ResourceSpec

POLL_WAIT_S = 1


def csv_key(key: str) -> str:
    """The output object's key: the input key with its extension replaced by ``.csv``."""
    path = PurePosixPath(key)
    return str(path.with_suffix(".csv")) if path.suffix else f"{key}.csv"


def run_serverless_demo(*, videos: Path, gallery: Path, students: Path,
                        expected: Path | None = None, function_concurrency: int = 2,
                        timeout_s: float = 600.0, work_dir: Path | None = None,
                        keep_work_dir: bool = False, resources: ResourceSpec | None = None,
                        async_time_scale: float = 1.0, handler: str | None = None,
                        out: IO[str] | None = None) -> DemoReport:
    """Run every file in *videos* through S3 → the function; see the module docstring.
    *resources*, *async_time_scale* and *handler* are for tests (the mode is forced to
    serverless)."""
    out = out or sys.stdout
    files = sorted(p for p in videos.iterdir() if p.is_file() and not p.name.startswith("."))
    if not files:
        raise ValueError(f"no videos in {videos}")
    expectations = read_expected(expected) if expected else {}
    runs = [VideoRun(key=p.name, source=p, expected=expectations.get(p.name)) for p in files]
    spec = replace(resources or ResourceSpec(prefix="local", url_auth_type="NONE"),
                   mode="serverless")
    scratch = WorkDir("openstack-handler-serverless-", given=work_dir, keep=keep_work_dir)
    print(f"starting the local cloud in serverless mode ({function_concurrency} warm function "
          "workers, no daemon)...", file=out, flush=True)
    extra = {"handler": handler} if handler else {}
    try:
        with LocalCloud(gallery=gallery, students=students, resources=spec, camera=False,
                        concurrency=function_concurrency, work_dir=scratch.path,
                        async_time_scale=async_time_scale, **extra) as cloud:
            print(f"uploading {len(runs)} videos to {cloud.provisioned.input_bucket}; S3 invokes "
                  f"{spec.function_name} for each", file=out, flush=True)
            session = cloud.session()
            started = time.monotonic()
            _upload_all(session.client("s3"), cloud.provisioned.input_bucket, runs)
            _wait_for_outcomes(runs, session, cloud, deadline=started + timeout_s)
            wall_s = time.monotonic() - started
    except BaseException:
        scratch.finish(False)
        raise
    report = DemoReport(runs=runs, wall_s=wall_s, daemon_exit=None, log_dir=scratch.path,
                        serverless=True)
    kept = scratch.finish(report.ok, announce=False)
    report = replace(report, log_dir=scratch.path if kept else None)
    print(render_report(report), file=out, flush=True)
    return report


def _wait_for_outcomes(runs: list[VideoRun], session: Any, cloud: LocalCloud, *,
                       deadline: float) -> None:
    sqs, s3 = session.client("sqs"), session.client("s3")
    provisioned = cloud.provisioned
    pending = {run.key: run for run in runs}
    while pending and time.monotonic() < deadline:
        # long-poll the results only: a failure is rare and may wait for the next turn
        for url, most in ((provisioned.output_queue_url, POLL_WAIT_S),
                          (provisioned.failure_queue_url, 0)):
            wait = max(0, min(most, int(deadline - time.monotonic())))
            for message in sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10,
                                               WaitTimeSeconds=wait).get("Messages", []):
                body = json.loads(message["Body"])
                for key, outcome in _outcomes(body):
                    run = pending.pop(key, None)
                    if run is not None:
                        _settle(run, outcome, s3, provisioned.output_bucket)
                sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])


def _outcomes(body: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(input key, outcome) pairs in a result message or a failure-destination record."""
    if "requestContext" in body:  # Lambda's record: the event with its error
        error = body.get("responsePayload") or {}
        reason = (f"{body['requestContext']['condition']} after "
                  f"{body['requestContext']['approximateInvokeCount']} attempt(s): "
                  f"{error.get('errorType', '')}: {error.get('errorMessage', '')}")
        return [(unquote_plus(r["s3"]["object"]["key"]), {"status": "failed", "reason": reason})
                for r in (body.get("requestPayload") or {}).get("Records", [])]
    return [(str(body.get("key", "")), body)]


def _settle(run: VideoRun, outcome: dict[str, Any], s3: Any, output_bucket: str) -> None:
    run.finished_at = time.monotonic()
    if outcome.get("status") == "ok":
        text = s3.get_object(Bucket=output_bucket,
                             Key=csv_key(run.key))["Body"].read().decode("utf-8")
        run.names = [row[0] for row in csv.reader(text.splitlines()) if row]
    elif outcome.get("status") == "error":
        error = outcome.get("error") or {}
        run.error = f"{error.get('type')}: {error.get('reason')}"
    else:
        run.error = str(outcome.get("reason"))
