"""Helpers shared by the daemon's tests in every tier (a module of its own: test modules must not import
``conftest``, whose name several test folders share)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

FUNCTION = "recognise"


@dataclass
class Queues:
    input: str
    input_dlq: str
    output: str
    output_dlq: str


def queue_with_dlq(sqs: Any, name: str, max_receive: int = 3) -> tuple[str, str]:
    dlq = sqs.create_queue(QueueName=f"{name}-dlq")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"]
    url = sqs.create_queue(QueueName=name, Attributes={
        "RedrivePolicy": json.dumps({"deadLetterTargetArn": arn,
                                     "maxReceiveCount": str(max_receive)})})["QueueUrl"]
    return url, dlq


def s3_event(bucket: str, key: str, *, etag: str = "0123abcd", size: int = 1000,
             event_name: str = "ObjectCreated:Put") -> dict[str, Any]:
    """An S3 event notification body as S3/moto sends it (key URL-encoded with '+')."""
    from urllib.parse import quote_plus

    return {"Records": [{
        "eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": "us-east-1",
        "eventName": event_name,
        "s3": {"s3SchemaVersion": "1.0", "configurationId": "videos",
               "bucket": {"name": bucket, "arn": f"arn:aws:s3:::{bucket}"},
               "object": {"key": quote_plus(key, safe="/"), "size": size, "eTag": etag}}}]}


def queue_counts(sqs: Any, url: str) -> tuple[int, int]:
    """(visible, not visible) for *url*."""
    attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=[
        "ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"])["Attributes"]
    return int(attrs["ApproximateNumberOfMessages"]), int(
        attrs["ApproximateNumberOfMessagesNotVisible"])


def json_log_lines(text: str) -> list[dict[str, Any]]:
    """The daemon's JSON log lines in *text*; anything else (a line cut short while another
    process wrote, a non-JSON line) is skipped."""
    lines = []
    for line in text.splitlines():
        if line.startswith("{"):
            try:
                lines.append(json.loads(line))
            except ValueError:
                continue
    return lines


def status_counters(text: str, *labels: str) -> dict[str, str]:
    """The counters of `openstack-handler status` output whose labels start with *labels*,
    as {label: value}."""
    return dict(line.rsplit(None, 1) for line in text.splitlines() if line.startswith(labels))


def status_targets(text: str) -> dict[str, dict[str, str]]:
    """`status`'s table of where the function ran: {target: {column: cell}}."""
    lines = text.splitlines()
    start = lines.index("WHERE THE FUNCTION RAN (every replica)") + 1
    header = re.split(r"\s{2,}", lines[start].strip())
    rows = {}
    for line in lines[start + 1:]:
        if line.startswith("saved against") or not line.strip():
            break
        cells = re.split(r"\s{2,}", line.strip())
        rows[cells[0]] = dict(zip(header, cells, strict=True))
    return rows
