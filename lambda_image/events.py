"""Read-only views of the invocation payloads (S3 notifications, Function URL requests)."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_plus

from lambda_image.errors import InvalidRequest


@dataclass(frozen=True)
class S3Object:
    bucket: str
    key: str  # URL-decoded
    etag: str | None
    version_id: str | None
    size: int | None


def s3_objects(event: Mapping[str, Any]) -> Iterator[S3Object]:
    """Every object record of an S3 notification; `s3:TestEvent` and non-S3 records yield nothing."""
    if event.get("Event") == "s3:TestEvent":
        return
    for record in event.get("Records") or []:
        s3 = record.get("s3") if isinstance(record, Mapping) else None
        if not s3 or not str(record.get("eventName", "ObjectCreated")).startswith("ObjectCreated"):
            continue
        obj = s3["object"]
        yield S3Object(bucket=s3["bucket"]["name"], key=unquote_plus(obj["key"]),
                       etag=obj.get("eTag") or obj.get("etag"), version_id=obj.get("versionId"),
                       size=obj.get("size"))


@dataclass(frozen=True)
class FrameRequest:
    content: bytes
    request_id: str
    filename: str | None


def frame_request(event: Mapping[str, Any]) -> FrameRequest:
    """The JSON body of a Function URL event (or the body itself when invoked directly)."""
    body: Any = event.get("body", event)
    if isinstance(body, str):
        if event.get("isBase64Encoded"):
            body = base64.b64decode(body)
        try:
            body = json.loads(body)
        except ValueError as exc:
            raise InvalidRequest(f"request body is not JSON: {exc}") from exc
    if not isinstance(body, Mapping) or not body.get("content"):
        raise InvalidRequest("request body needs 'content' (base64 image)")
    try:
        content = base64.b64decode(body["content"], validate=True)
    except (binascii.Error, ValueError, TypeError) as exc:
        raise InvalidRequest(f"'content' is not base64: {exc}") from exc
    return FrameRequest(content=content, request_id=str(body.get("request_id") or ""),
                        filename=body.get("filename"))
