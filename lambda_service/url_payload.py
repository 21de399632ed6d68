"""Function URL payloads: an HTTP request as the payload format 2.0 event, and the function's
return value as the HTTP response, by the rules Lambda documents ("Request and response
payloads" in the Lambda developer guide; the API Gateway HTTP API 2.0 schema).

Pure functions over plain data, so the HTTP server (:mod:`~lambda_service.urls`) stays a
thin shell around them.
"""

from __future__ import annotations

import base64
import json
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

#: Content types whose bodies reach the function as text; every other body is base64-encoded
#: (`isBase64Encoded: true`), as Lambda does for binary payloads.
_TEXT_TYPES = ("application/json", "application/javascript", "application/xml",
               "application/x-www-form-urlencoded", "application/x-yaml", "application/yaml")


@dataclass(frozen=True)
class HttpRequest:
    """What the URL server read off the wire."""

    method: str
    target: str  # the request line's target: path and query, as sent
    headers: Sequence[tuple[str, str]]  # in order, repeated names kept
    body: bytes
    source_ip: str
    protocol: str = "HTTP/1.1"


@dataclass(frozen=True)
class UrlContext:
    """Which URL the request came in on, for `requestContext`."""

    url_id: str
    account_id: str
    region: str
    authorizer: Mapping[str, Any] | None = None  # {"iam": {...}} for AWS_IAM


@dataclass(frozen=True)
class HttpResponse:
    status: int
    headers: Sequence[tuple[str, str]] = ()
    body: bytes = b""
    cookies: Sequence[str] = field(default_factory=tuple)


class BadFunctionResponse(ValueError):
    """The function's return value cannot be turned into an HTTP response (Lambda: 502)."""


def is_text(content_type: str | None) -> bool:
    if not content_type:
        return False
    media = content_type.split(";", 1)[0].strip().lower()
    return media.startswith("text/") or media in _TEXT_TYPES or media.endswith(("+json", "+xml"))


def build_event(request: HttpRequest, context: UrlContext, *, request_id: str,
                now: datetime | None = None) -> dict[str, Any]:
    """The payload format 2.0 event Lambda passes to a function behind a URL."""
    now = now or datetime.now(UTC)
    parts = urllib.parse.urlsplit(request.target)
    path = parts.path or "/"
    headers: dict[str, str] = {}
    cookies: list[str] = []
    for name, value in request.headers:
        lname = name.lower()
        if lname == "cookie":
            cookies.extend(c.strip() for c in value.split(";") if c.strip())
            continue
        headers[lname] = f"{headers[lname]},{value}" if lname in headers else value
    query: dict[str, str] = {}
    for key, value in urllib.parse.parse_qsl(parts.query, keep_blank_values=True):
        query[key] = f"{query[key]},{value}" if key in query else value
    event: dict[str, Any] = {
        "version": "2.0", "routeKey": "$default", "rawPath": path,
        "rawQueryString": parts.query, "headers": headers,
        "requestContext": {
            "accountId": "anonymous" if context.authorizer is None else context.account_id,
            "apiId": context.url_id, "authentication": None,
            "authorizer": context.authorizer,
            "domainName": f"{context.url_id}.lambda-url.{context.region}.on.aws",
            "domainPrefix": context.url_id,
            "http": {"method": request.method.upper(), "path": path,
                     "protocol": request.protocol, "sourceIp": request.source_ip,
                     "userAgent": headers.get("user-agent", "")},
            "requestId": request_id, "routeKey": "$default", "stage": "$default",
            "time": now.strftime("%d/%b/%Y:%H:%M:%S +0000"),
            "timeEpoch": int(now.timestamp() * 1000),
        },
        "isBase64Encoded": False,
    }
    if cookies:
        event["cookies"] = cookies
    if query:
        event["queryStringParameters"] = query
    if request.body:
        if is_text(headers.get("content-type")):
            try:
                event["body"] = request.body.decode("utf-8")
            except UnicodeDecodeError:
                event["body"] = base64.b64encode(request.body).decode("ascii")
                event["isBase64Encoded"] = True
        else:
            event["body"] = base64.b64encode(request.body).decode("ascii")
            event["isBase64Encoded"] = True
    return event


def map_response(payload: bytes) -> HttpResponse:
    """The HTTP response for a function's (successful) return value.

    A JSON object with `statusCode` is taken as given (`headers`, `body`, `isBase64Encoded`,
    `cookies`); any other JSON value is the body of a 200 `application/json` response, as it
    was returned. Raises BadFunctionResponse when neither applies.
    """
    try:
        value = json.loads(payload) if payload else None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadFunctionResponse(f"the function returned invalid JSON: {exc}") from exc
    if not isinstance(value, dict) or "statusCode" not in value:
        return HttpResponse(200, (("Content-Type", "application/json"),), payload or b"null")
    status = value["statusCode"]
    if isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 599:
        raise BadFunctionResponse(f"statusCode {status!r} is not an HTTP status")
    raw_headers = value.get("headers") or {}
    if not isinstance(raw_headers, Mapping):
        raise BadFunctionResponse("headers must be an object")
    headers = [(str(k), str(v)) for k, v in raw_headers.items()
               if str(k).lower() not in ("content-length", "transfer-encoding", "connection")]
    if not any(k.lower() == "content-type" for k, _ in headers):
        headers.append(("Content-Type", "application/json"))
    body = value.get("body")
    if body is None:
        data = b""
    elif isinstance(body, str):
        if value.get("isBase64Encoded"):
            try:
                data = base64.b64decode(body, validate=True)
            except ValueError as exc:
                raise BadFunctionResponse(f"body is not base64: {exc}") from exc
        else:
            data = body.encode("utf-8")
    else:
        data = json.dumps(body).encode("utf-8")
    cookies = value.get("cookies") or []
    if not isinstance(cookies, list) or not all(isinstance(c, str) for c in cookies):
        raise BadFunctionResponse("cookies must be a list of strings")
    return HttpResponse(status, tuple(headers), data, tuple(cookies))


def error_response(status: int, message: str, error_type: str | None = None) -> HttpResponse:
    """What the URL itself answers when the function is not (or could not be) run."""
    headers = [("Content-Type", "application/json")]
    if error_type:
        headers.append(("x-amzn-ErrorType", error_type))
    return HttpResponse(status, tuple(headers), json.dumps({"Message": message}).encode())
