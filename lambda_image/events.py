"""Read-only views of the invocation payloads (S3 notifications, Function URL requests)."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_plus

from lambda_image.camera_tracks import CameraFrame, camera_frame
from lambda_image.errors import InvalidImage, InvalidRequest, MethodNotAllowed


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


#: the longest request id a frame request may carry (it travels in queue messages and logs)
MAX_REQUEST_ID_CHARS = 256


@dataclass(frozen=True)
class FrameRequest:
    """One camera frame: its bytes (POST) or where they are in S3 (``GET ?bucket=&key=``)."""

    request_id: str | None  # None: the caller sent none (the invocation's id answers it)
    filename: str | None
    content: bytes | None = None
    bucket: str | None = None
    key: str | None = None
    camera: CameraFrame | None = None  # which camera sent it, and its number in that stream


def _http_method(event: Mapping[str, Any]) -> str | None:
    context = event.get("requestContext")
    http = context.get("http") if isinstance(context, Mapping) else None
    method = http.get("method") if isinstance(http, Mapping) else None
    return method.upper() if isinstance(method, str) else None


def _body(event: Mapping[str, Any]) -> Any:
    """The decoded JSON body of a Function URL event, or the event itself (a direct invoke)."""
    if "body" not in event and _http_method(event) is None:
        return event
    body: Any = event.get("body")
    if body is None or body == "":
        raise InvalidRequest("the request has no body: POST a JSON object "
                             '{"content": base64 image, "request_id", "filename"}')
    if not isinstance(body, str):
        return body
    raw: bytes | str = body
    if event.get("isBase64Encoded"):
        try:
            raw = base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise InvalidRequest(f"the request body is not valid base64: {exc}") from exc
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, ValueError) as exc:
        raise InvalidRequest(f"request body is not JSON: {exc}") from exc


def checked_request_id(value: Any) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise InvalidRequest(f"'request_id' must be a string, not {type(value).__name__}")
    if len(value) > MAX_REQUEST_ID_CHARS or not value.isprintable():
        raise InvalidRequest(f"'request_id' must be printable and at most "
                             f"{MAX_REQUEST_ID_CHARS} characters")
    return value


def checked_filename(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > 1024:
        raise InvalidRequest("'filename' must be a string of at most 1024 characters")
    return value


def frame_request(event: Mapping[str, Any]) -> FrameRequest:
    """The frame a Function URL event (payload format 2.0) or a direct invocation asks about.

    POST (or a direct invoke): the JSON body ``{"content": base64, "request_id", "filename"}``.
    GET: ``?bucket=B&key=K`` (the earliest camera client's form: the frame is in S3), with
    optional ``request_id`` and ``filename``. Either form may name its camera and the frame's
    number in that camera's stream (``camera_id``, ``sequence``: lambda_image.camera_tracks).
    Raises InvalidRequest (MethodNotAllowed for other methods) or InvalidImage (an empty image).
    """
    method = _http_method(event)
    if method == "GET":
        params = event.get("queryStringParameters") or {}
        if not isinstance(params, Mapping) or not params.get("bucket") or not params.get("key"):
            raise InvalidRequest("a GET request needs ?bucket=B&key=K (the frame's S3 object)")
        return FrameRequest(request_id=checked_request_id(params.get("request_id")),
                            filename=checked_filename(params.get("filename")) or params["key"],
                            bucket=params["bucket"], key=params["key"],
                            camera=camera_frame(params.get("camera_id"), params.get("sequence"),
                                                from_text=True))
    if method not in (None, "POST"):
        raise MethodNotAllowed(f"{method} is not supported: POST a frame, or GET ?bucket=&key=")
    body = _body(event)
    if not isinstance(body, Mapping):
        raise InvalidRequest(f"the request body must be a JSON object, not {type(body).__name__}")
    request_id = checked_request_id(body.get("request_id"))
    filename = checked_filename(body.get("filename"))
    camera = camera_frame(body.get("camera_id"), body.get("sequence"))
    if "content" not in body or body["content"] is None:
        raise InvalidRequest("request body needs 'content' (base64 image)")
    if not isinstance(body["content"], str):
        raise InvalidRequest(f"'content' must be a base64 string, not "
                             f"{type(body['content']).__name__}")
    try:
        content = base64.b64decode(body["content"], validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidRequest(f"'content' is not base64: {exc}") from exc
    if not content:
        raise InvalidImage("the image is empty (0 bytes)")
    return FrameRequest(request_id=request_id, filename=filename, content=content, camera=camera)


def request_id_of(event: Mapping[str, Any]) -> str | None:
    """The caller's request id if it can be read and is valid, else None (for error answers:
    an id that is not a valid string is never echoed)."""
    try:
        if _http_method(event) == "GET":
            params = event.get("queryStringParameters") or {}
            return checked_request_id(params.get("request_id")) if isinstance(params, Mapping) else None
        body = _body(event)
        return checked_request_id(body.get("request_id")) if isinstance(body, Mapping) else None
    except InvalidRequest:
        return None
