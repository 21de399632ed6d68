"""Function URLs: the configs (Create/Get/Update/Delete/ListFunctionUrlConfigs) and an HTTP server
per URL on 127.0.0.1, one port each; the `FunctionUrl` a config returns is what clients call.

A request to a URL is authorised (AWS_IAM: a SigV4 signature by one of the local cloud's
credentials; NONE: the function's policy must grant public access), turned into the payload
format 2.0 event (:mod:`~lambda_service.url_payload`), invoked through the service's one
dispatch point, and the return value mapped back to HTTP. What the URL answers itself, as
Lambda's does: 403 `AccessDeniedException` (nothing is invoked), 413 for a body over 6 MB, 429
when the function is at its concurrency, 502 for a function error or an unusable response.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler
from typing import Any

import structlog

from lambda_service import sigv4, url_payload
from lambda_service.errors import (
    InvalidParameterValue,
    RequestTooLarge,
    ResourceConflict,
    ResourceNotFound,
    ServiceError,
    TooManyRequests,
)
from lambda_service.net import NoDelayHTTPServer
from lambda_service.permissions import Policies
from lambda_service.service import MAX_SYNC_PAYLOAD, Invocation, LambdaService

log = structlog.get_logger()

AUTH_TYPES = ("NONE", "AWS_IAM")
INVOKE_MODES = ("BUFFERED", "RESPONSE_STREAM")
#: A body this far over the limit is not read at all: the connection is closed after the 413.
_DRAIN_LIMIT = 64 * 1024 * 1024


def _iso_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


@dataclass(frozen=True)
class UrlConfig:
    """One function's URL config (FunctionUrlConfig in the API)."""

    function: str
    function_arn: str
    url_id: str
    port: int
    host: str
    auth_type: str
    invoke_mode: str = "BUFFERED"
    cors: Mapping[str, Any] | None = None
    created: str = field(default_factory=_iso_now)
    modified: str = field(default_factory=_iso_now)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/"

    def to_json(self, *, with_modified: bool = True) -> dict[str, Any]:
        body: dict[str, Any] = {"FunctionUrl": self.url, "FunctionArn": self.function_arn,
                                "AuthType": self.auth_type, "CreationTime": self.created,
                                "InvokeMode": self.invoke_mode}
        if self.cors is not None:
            body["Cors"] = dict(self.cors)
        if with_modified:
            body["LastModifiedTime"] = self.modified
        return body


def _auth_type(body: Mapping[str, Any], *, required: bool) -> str | None:
    value = body.get("AuthType")
    if value is None and not required:
        return None
    if value not in AUTH_TYPES:
        raise InvalidParameterValue(f"1 validation error detected: Value '{value}' at "
                                    "'authType' failed to satisfy constraint: Member must "
                                    f"satisfy enum value set: [{', '.join(AUTH_TYPES)}]")
    return str(value)


def _invoke_mode(body: Mapping[str, Any]) -> str | None:
    value = body.get("InvokeMode")
    if value is not None and value not in INVOKE_MODES:
        raise InvalidParameterValue(f"InvokeMode must be one of {', '.join(INVOKE_MODES)}")
    if value == "RESPONSE_STREAM":
        raise InvalidParameterValue("InvokeMode RESPONSE_STREAM is not supported by the local "
                                    "cloud (BUFFERED only)")
    return value


def _cors(body: Mapping[str, Any]) -> Mapping[str, Any] | None:
    value = body.get("Cors")
    if value is not None and not isinstance(value, Mapping):
        raise InvalidParameterValue("Cors must be an object")
    return value


class FunctionUrls:
    """Every URL config of the endpoint and the server behind each."""

    def __init__(self, service: LambdaService, policies: Policies, *, host: str,
                 credentials: Mapping[str, str]) -> None:
        self.service = service
        self.policies = policies
        self.host = host
        self.credentials = dict(credentials)
        self._lock = threading.Lock()
        self._configs: dict[str, UrlConfig] = {}
        self._servers: dict[str, UrlServer] = {}

    def _function(self, name: str, qualifier: str | None) -> tuple[str, str]:
        if qualifier not in (None, ""):
            raise ResourceNotFound(f"Function not found: {self.service.spec.function_arn(name)}"
                                   f":{qualifier} (the local cloud has no aliases)")
        pool = self.service.resolve(name, None)
        fn = pool.function.name
        return fn, self.service.spec.function_arn(fn)

    def create(self, name: str, qualifier: str | None, body: Mapping[str, Any]) -> dict[str, Any]:
        fn, arn = self._function(name, qualifier)
        auth = _auth_type(body, required=True)
        mode = _invoke_mode(body) or "BUFFERED"
        cors = _cors(body)
        with self._lock:
            if fn in self._configs:
                raise ResourceConflict(f"Failed to create function url config for "
                                       f"[functionArn = {arn}]. Error message:  "
                                       "FunctionUrlConfig exists for this Lambda function")
            server = UrlServer((self.host, 0), self, fn)
            config = UrlConfig(function=fn, function_arn=arn, url_id=secrets.token_hex(16),
                               port=server.server_address[1], host=self.host,
                               auth_type=str(auth), invoke_mode=mode, cors=cors)
            self._configs[fn] = config
            self._servers[fn] = server
            server.start()
        log.info("function_url_created", function=fn, url=config.url, auth_type=auth)
        return config.to_json(with_modified=False)

    def config(self, function: str) -> UrlConfig | None:
        with self._lock:
            return self._configs.get(function)

    def get(self, name: str, qualifier: str | None) -> dict[str, Any]:
        fn, _ = self._function(name, qualifier)
        config = self.config(fn)
        if config is None:
            raise ResourceNotFound("The resource you requested does not exist.")
        return config.to_json()

    def update(self, name: str, qualifier: str | None, body: Mapping[str, Any]) -> dict[str, Any]:
        fn, _ = self._function(name, qualifier)
        auth = _auth_type(body, required=False)
        mode = _invoke_mode(body)
        cors = _cors(body)
        with self._lock:
            config = self._configs.get(fn)
            if config is None:
                raise ResourceNotFound("The resource you requested does not exist.")
            config = replace(config, auth_type=auth or config.auth_type,
                             invoke_mode=mode or config.invoke_mode,
                             cors=cors if "Cors" in body else config.cors, modified=_iso_now())
            self._configs[fn] = config
        log.info("function_url_updated", function=fn, auth_type=config.auth_type)
        return config.to_json()

    def delete(self, name: str, qualifier: str | None) -> None:
        fn, _ = self._function(name, qualifier)
        with self._lock:
            if self._configs.pop(fn, None) is None:
                raise ResourceNotFound("The resource you requested does not exist.")
            server = self._servers.pop(fn)
        server.stop()
        log.info("function_url_deleted", function=fn)

    def list(self, name: str) -> dict[str, Any]:
        fn, _ = self._function(name, None)
        config = self.config(fn)
        return {"FunctionUrlConfigs": [config.to_json()] if config else []}

    def stop(self) -> None:
        with self._lock:
            servers = list(self._servers.values())
            self._servers.clear()
            self._configs.clear()
        for server in servers:
            server.stop()


class UrlServer(NoDelayHTTPServer):
    """One Function URL: thread per connection, TCP_NODELAY (see net.NoDelayHTTPServer)."""

    request_queue_size = 128

    def __init__(self, address: tuple[str, int], urls: FunctionUrls, function: str) -> None:
        self.urls = urls
        self.function = function
        super().__init__(address, UrlRequestHandler)
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.2},
                                        name=f"url-{self.function}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


class UrlRequestHandler(BaseHTTPRequestHandler):
    """Any method on any path of the URL: authorise, invoke, answer."""

    protocol_version = "HTTP/1.1"
    server: UrlServer

    def log_message(self, format: str, *args: Any) -> None:
        """Invocations are logged by the pool; no stdlib access log."""

    def do_GET(self) -> None:
        self._handle()

    do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = do_GET

    def _handle(self) -> None:
        started = time.perf_counter()
        config = self.server.urls.config(self.server.function)
        if config is None:  # deleted while this connection was open
            self._send(url_payload.error_response(404, "Not Found"))
            return
        body = self._read_body()
        if body is None:
            self._send(url_payload.error_response(
                413, f"Request must be smaller than {MAX_SYNC_PAYLOAD} bytes for the "
                     "InvokeFunction operation", "RequestTooLargeException"), close=True)
            return
        headers = list(self.headers.items())
        request_id = secrets.token_hex(16)
        try:
            authorizer = self._authorize(config, body, headers)
        except sigv4.AccessDenied as exc:
            log.info("function_url_forbidden", function=config.function, reason=str(exc))
            self._send(url_payload.error_response(403, "Forbidden", "AccessDeniedException"))
            return
        request = url_payload.HttpRequest(method=self.command, target=self.path,
                                          headers=headers, body=body,
                                          source_ip=self.client_address[0],
                                          protocol=self.request_version)
        context = url_payload.UrlContext(url_id=config.url_id,
                                         account_id=self.server.urls.service.spec.account_id,
                                         region=self.server.urls.service.spec.region,
                                         authorizer=authorizer)
        event = url_payload.build_event(request, context, request_id=request_id)
        response = self._invoke(config, json.dumps(event).encode())
        self._send(response, cors=config.cors, request_id=request_id)
        log.debug("function_url_request", function=config.function, status=response.status,
                  ms=round((time.perf_counter() - started) * 1000, 2))

    def _authorize(self, config: UrlConfig, body: bytes,
                   headers: list[tuple[str, str]]) -> dict[str, Any] | None:
        urls = self.server.urls
        if config.auth_type == "AWS_IAM":
            caller = sigv4.verify(method=self.command, target=self.path, headers=headers,
                                  body=body, credentials=urls.credentials,
                                  region=urls.service.spec.region,
                                  account_id=urls.service.spec.account_id)
            return caller.authorizer()
        if not urls.policies.allows_public_url(config.function):
            raise sigv4.AccessDenied("auth type NONE, but the function's policy does not grant "
                                     "public lambda:InvokeFunctionUrl and lambda:InvokeFunction")
        return None

    def _invoke(self, config: UrlConfig, payload: bytes) -> url_payload.HttpResponse:
        service = self.server.urls.service
        try:
            outcome = service.invoke(Invocation(function=config.function, payload=payload))
        except TooManyRequests:
            return url_payload.error_response(429, "Rate Exceeded.", "TooManyRequestsException")
        except RequestTooLarge as exc:
            return url_payload.error_response(413, exc.message, "RequestTooLargeException")
        except ServiceError as exc:
            log.warning("function_url_service_error", function=config.function,
                        error_type=exc.error_type, error=exc.message)
            return url_payload.error_response(502, "Internal Server Error", exc.error_type)
        result = outcome.result
        if result is None or result.function_error:
            return url_payload.error_response(502, "Internal Server Error")
        try:
            return url_payload.map_response(result.payload)
        except url_payload.BadFunctionResponse as exc:
            log.warning("function_url_bad_response", function=config.function, error=str(exc))
            return url_payload.error_response(502, "Internal Server Error")

    def _read_body(self) -> bytes | None:
        """The request body (chunked or by Content-Length); None when over Lambda's 6 MB."""
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            return self._read_chunked()
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_SYNC_PAYLOAD:
            if length <= _DRAIN_LIMIT:  # read it, so the client sees the 413, not a reset
                remaining = length
                while remaining > 0:
                    chunk = self.rfile.read(min(remaining, 1 << 20))
                    if not chunk:
                        break
                    remaining -= len(chunk)
            return None
        return self.rfile.read(length) if length > 0 else b""

    def _read_chunked(self) -> bytes | None:
        parts: list[bytes] = []
        size = 0
        while True:
            line = self.rfile.readline(1024)
            try:
                chunk = int(line.split(b";", 1)[0].strip() or b"0", 16)
            except ValueError:
                return None
            if chunk == 0:
                while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                break
            size += chunk
            if size > _DRAIN_LIMIT:
                return None
            parts.append(self.rfile.read(chunk))
            self.rfile.readline(8)  # the CRLF after the chunk
        return None if size > MAX_SYNC_PAYLOAD else b"".join(parts)

    def _send(self, response: url_payload.HttpResponse, *, close: bool = False,
              cors: Mapping[str, Any] | None = None, request_id: str | None = None) -> None:
        self.send_response(response.status)
        for name, value in response.headers:
            self.send_header(name, value)
        for cookie in response.cookies:
            self.send_header("Set-Cookie", cookie)
        if request_id:
            self.send_header("x-amzn-RequestId", request_id)
        if cors and self.headers.get("Origin"):
            origins = list(cors.get("AllowOrigins") or [])
            origin = self.headers["Origin"]
            if "*" in origins or origin in origins:
                self.send_header("Access-Control-Allow-Origin", "*" if "*" in origins
                                 else origin)
        self.send_header("Content-Length", str(len(response.body)))
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if response.body and self.command != "HEAD":
            self.wfile.write(response.body)
