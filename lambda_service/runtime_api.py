"""The Lambda Runtime API (version 2018-06-01) of one execution environment.

What a runtime inside the environment (awslambdaric in our image) talks to, on
``AWS_LAMBDA_RUNTIME_API`` = ``127.0.0.1:<port>``:

- ``GET  /2018-06-01/runtime/invocation/next`` blocks until the platform has an invocation, then
  answers it with the event as body and the ``Lambda-Runtime-Aws-Request-Id``,
  ``Lambda-Runtime-Deadline-Ms``, ``Lambda-Runtime-Invoked-Function-Arn``,
  ``Lambda-Runtime-Trace-Id`` (and ``Lambda-Runtime-Client-Context``) headers; the first call
  also ends the init phase;
- ``POST /2018-06-01/runtime/invocation/{id}/response`` the result (202);
- ``POST /2018-06-01/runtime/invocation/{id}/error`` a handler error, its type in
  ``Lambda-Runtime-Function-Error-Type`` (202);
- ``POST /2018-06-01/runtime/init/error`` an init failure (202); the platform reports
  ``Runtime.InitError`` and discards the environment.

A request id that is not the invocation in flight is 400 ``InvalidRequestID``, as on Lambda.
The platform side (:mod:`lambda_service.environment`) calls :meth:`RuntimeAPI.wait_init`,
:meth:`RuntimeAPI.submit` and :meth:`RuntimeAPI.wait_result`.
"""

from __future__ import annotations

import json
import re
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

from lambda_service.net import JSONResponses, NoDelayHTTPServer

PREFIX = "/2018-06-01/runtime"
NEXT = f"{PREFIX}/invocation/next"
INIT_ERROR = f"{PREFIX}/init/error"
_INVOCATION = re.compile(rf"^{PREFIX}/invocation/(?P<id>[^/]+)/(?P<kind>response|error)$")
ERROR_TYPE_HEADER = "Lambda-Runtime-Function-Error-Type"
#: How long one blocked /next call waits before checking whether the API is stopping.
_NEXT_POLL_S = 0.5


@dataclass(frozen=True)
class Invocation:
    """What /next hands the runtime."""

    request_id: str
    payload: bytes
    deadline_ms: int
    function_arn: str
    trace_id: str
    client_context: dict[str, Any] | None = None


@dataclass(frozen=True)
class RuntimeResult:
    """What the runtime posted for an invocation: its response, or its error."""

    payload: bytes
    error: bool
    error_type: str | None = None


@dataclass(frozen=True)
class InitError:
    """What the runtime posted to /init/error."""

    error_type: str
    payload: bytes

    def message(self) -> str:
        """The runtime's own errorType: errorMessage, for the Runtime.InitError the caller sees."""
        try:
            body = json.loads(self.payload)
            return f"{body.get('errorType') or self.error_type}: {body.get('errorMessage', '')}"
        except (ValueError, AttributeError):
            return f"{self.error_type}: {self.payload[:500].decode(errors='replace')}"

    def stack(self) -> list[str]:
        try:
            return list(json.loads(self.payload).get("stackTrace") or [])
        except (ValueError, AttributeError, TypeError):
            return []


class RuntimeAPI:
    """The Runtime API of one environment: an HTTP server on 127.0.0.1 and the state between the
    runtime (HTTP) and the platform (method calls), guarded by one condition."""

    def __init__(self, *, host: str = "127.0.0.1") -> None:
        self._cond = threading.Condition()
        self._pending: Invocation | None = None  # submitted, not yet taken by /next
        self._in_flight: str | None = None  # taken by /next, no result yet
        self._results: dict[str, RuntimeResult] = {}
        self._initialised = False
        self._init_error: InitError | None = None
        self._stopped = False
        self._server = _Server((host, 0), self)
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.2}, daemon=True,
                                        name="runtime-api")

    @property
    def address(self) -> str:
        """``host:port``, the value of AWS_LAMBDA_RUNTIME_API."""
        host, port = self._server.server_address[:2]
        return f"{host}:{port}"

    def start(self) -> RuntimeAPI:
        self._thread.start()
        return self

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
        self._server.shutdown()
        self._server.server_close()

    # -- the platform's side -----------------------------------------------------------------
    def wait_init(self, timeout_s: float) -> bool:
        """True once init is over: the runtime asked for its first invocation, or posted an init
        error (see :attr:`init_error`); False after *timeout_s*."""
        with self._cond:
            return self._cond.wait_for(lambda: self._initialised or self._init_error is not None
                                       or self._stopped, timeout_s) and not self._stopped

    @property
    def init_error(self) -> InitError | None:
        with self._cond:
            return self._init_error

    def submit(self, invocation: Invocation) -> None:
        """Hand *invocation* to the runtime's (next) /next call."""
        with self._cond:
            if self._pending is not None or self._in_flight is not None:
                raise RuntimeError("an invocation is already in flight in this environment")
            self._pending = invocation
            self._cond.notify_all()

    def wait_result(self, request_id: str, timeout_s: float) -> RuntimeResult | None:
        with self._cond:
            self._cond.wait_for(lambda: request_id in self._results or self._stopped, timeout_s)
            return self._results.pop(request_id, None)

    # -- the runtime's side (HTTP handler threads) ---------------------------------------------
    def _next(self) -> Invocation | None:
        """Block until an invocation is submitted (None: the API is stopping)."""
        with self._cond:
            self._initialised = True
            self._cond.notify_all()
            while self._pending is None and not self._stopped:
                self._cond.wait(_NEXT_POLL_S)
            if self._stopped:
                return None
            invocation, self._pending = self._pending, None
            assert invocation is not None
            self._in_flight = invocation.request_id
            return invocation

    def _post_result(self, request_id: str, result: RuntimeResult) -> bool:
        with self._cond:
            if request_id != self._in_flight:
                return False
            self._in_flight = None
            self._results[request_id] = result
            self._cond.notify_all()
            return True

    def _post_init_error(self, error: InitError) -> bool:
        with self._cond:
            if self._initialised:
                return False
            self._init_error = error
            self._cond.notify_all()
            return True


class _Server(NoDelayHTTPServer):
    def __init__(self, address: tuple[str, int], api: RuntimeAPI) -> None:
        self.api = api
        super().__init__(address, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A runtime killed mid-request (timeout, memory, crash) resets its connection: expected,
        and the platform has already reported it; anything else is printed as usual."""
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)


class _Handler(JSONResponses):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        """No per-request stderr line."""

    def do_GET(self) -> None:
        if self.path.split("?", 1)[0] != NEXT:
            self.send_json(404, {"errorMessage": f"no route {self.path}", "errorType": "NotFound"})
            return
        invocation = self.server.api._next()
        if invocation is None:
            self.send_json(500, {"errorMessage": "environment shutting down",
                             "errorType": "ShuttingDown"})
            return
        headers = {"Lambda-Runtime-Aws-Request-Id": invocation.request_id,
                   "Lambda-Runtime-Deadline-Ms": str(invocation.deadline_ms),
                   "Lambda-Runtime-Invoked-Function-Arn": invocation.function_arn,
                   "Lambda-Runtime-Trace-Id": invocation.trace_id}
        if invocation.client_context is not None:
            headers["Lambda-Runtime-Client-Context"] = json.dumps(invocation.client_context)
        self.send_body(200, invocation.payload or b"{}", headers)

    def do_POST(self) -> None:
        path = self.path.split("?", 1)[0]
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        api = self.server.api
        error_type = self.headers.get(ERROR_TYPE_HEADER)
        if path == INIT_ERROR:
            ok = api._post_init_error(InitError(error_type or "Runtime.Unknown", body))
            self._accepted(ok, "init already completed")
            return
        match = _INVOCATION.match(path)
        if match is None:
            self.send_json(404, {"errorMessage": f"no route {self.path}", "errorType": "NotFound"})
            return
        error = match["kind"] == "error"
        result = RuntimeResult(body, error, (error_type or _body_error_type(body)) if error
                               else None)
        self._accepted(api._post_result(match["id"], result),
                       f"Invalid request ID: {match['id']}")

    def _accepted(self, ok: bool, why: str) -> None:
        if ok:
            self.send_json(202, {"status": "OK"})
        else:
            self.send_json(400, {"errorMessage": why, "errorType": "InvalidRequestID"})



def _body_error_type(body: bytes) -> str | None:
    """The errorType inside an error document (awslambdaric's native client sends no header)."""
    try:
        value = json.loads(body).get("errorType")
    except (ValueError, AttributeError):
        return None
    return str(value) if value else None


def deadline_ms(deadline_monotonic: float) -> int:
    """A monotonic deadline as Lambda-Runtime-Deadline-Ms (Unix epoch milliseconds)."""
    return int((time.time() + (deadline_monotonic - time.monotonic())) * 1000)
