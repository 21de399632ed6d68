"""Result rendering (CSV rows, the JSON message) and writing it to S3 and SQS."""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections.abc import Mapping, Sequence
from pathlib import PurePosixPath
from typing import Any

import structlog

from lambda_image.matching import NO_PERSONS, UNKNOWN

log = structlog.get_logger()

SCHEMA = 1


def person_rows(names: Sequence[str], records: Mapping[str, Mapping[str, str]]) -> list[dict[str, str]]:
    """One {"name", "major", "year"} per name; unknown/no-person rows and unrecorded names stay empty."""
    if not names:
        names = [NO_PERSONS]
    rows = []
    for name in names:
        record = records.get(name) if name not in (UNKNOWN, NO_PERSONS) else None
        if record is None and name not in (UNKNOWN, NO_PERSONS):
            log.warning("records.missing", name=name)
        rows.append({"name": name, "major": (record or {}).get("major", ""),
                     "year": (record or {}).get("year", "")})
    return rows


def render_csv(rows: Sequence[Mapping[str, str]]) -> str:
    """`name,major,year` lines, no header, `\\n` line ends (the course format)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    for row in rows:
        writer.writerow([row["name"], row["major"], row["year"]])
    return buffer.getvalue()


def csv_key(key: str) -> str:
    """Input key with its extension replaced by `.csv` (folders kept)."""
    path = PurePosixPath(key)
    return str(path.with_suffix(".csv")) if path.suffix else key + ".csv"


def put_csv(s3: Any, bucket: str, key: str, text: str) -> None:
    s3.put_object(Bucket=bucket, Key=key, Body=text.encode("utf-8"),
                  ContentType="text/csv; charset=utf-8")


def send_message(sqs: Any, queue_url: str, message: Mapping[str, Any]) -> None:
    body = json.dumps(message, separators=(",", ":"), sort_keys=False)
    kwargs: dict[str, Any] = {"QueueUrl": queue_url, "MessageBody": body}
    if queue_url.endswith(".fifo"):
        group = str(message.get("key") or message.get("request_id") or "results")
        kwargs.update(MessageGroupId=group[:128],
                      MessageDeduplicationId=hashlib.sha256(body.encode()).hexdigest())
    sqs.send_message(**kwargs)
