"""A FAKE Lambda Invoke endpoint for the daemon's tests — scripted replies for the error paths.

This is NOT the local Lambda endpoint (localcloud builds the real one, which runs handlers in warm
workers). It answers ``POST /2015-03-31/functions/{name}/invocations`` with whatever the test's
``behaviour(name, payload)`` returns, and measures how many invocations run at the same time.
A dry run (``X-Amz-Invocation-Type: DryRun``) is answered by ``dry_run(name)`` instead (204, as
Lambda answers it, unless a test says otherwise) and counted in ``dry_runs``, not in ``calls``.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Reply:
    status: int = 200
    body: Any = None  # JSON-serialised unless bytes
    headers: dict[str, str] = field(default_factory=dict)


def results_for(payload: dict[str, Any], *, status: str = "ok",
                csv: str = "president_trump,physics,junior\n") -> dict[str, Any]:
    """The contract's return value, one result per record of *payload*."""
    from urllib.parse import unquote_plus

    results = []
    for record in payload.get("Records", []):
        obj = record["s3"]["object"]
        result = {"schema": 1, "status": status, "request_id": "fake-req",
                  "bucket": record["s3"]["bucket"]["name"], "key": unquote_plus(obj["key"]),
                  "etag": obj.get("eTag"), "version_id": None}
        if status == "ok":
            result["csv"] = csv
        else:
            result["error"] = {"type": "InvalidVideo", "reason": "no video stream"}
        results.append(result)
    return {"results": results}


def ok(payload: dict[str, Any]) -> Reply:
    return Reply(200, results_for(payload))


def function_error(error_type: str = "RuntimeError", message: str = "boom") -> Reply:
    return Reply(200, {"errorType": error_type, "errorMessage": message},
                 {"X-Amz-Function-Error": "Unhandled"})


def unavailable() -> Reply:
    """A 503 ServiceException: Lambda itself failing (retryable)."""
    return Reply(503, {"Type": "Service", "message": "Service unavailable"},
                 {"x-amzn-ErrorType": "ServiceException"})


def throttled() -> Reply:
    return Reply(429, {"Type": "User", "message": "Rate Exceeded.",
                       "Reason": "ReservedFunctionConcurrentInvocationLimitExceeded"},
                 {"x-amzn-ErrorType": "TooManyRequestsException"})


Behaviour = Callable[[str, dict[str, Any]], Reply]


class FakeLambda:
    """The fake endpoint on 127.0.0.1; ``calls`` records (function name, payload) in order."""

    def __init__(self, behaviour: Behaviour = lambda name, payload: ok(payload)) -> None:
        self.behaviour = behaviour
        self.dry_run: Callable[[str], Reply] = lambda name: Reply(204, b"")
        self.dry_runs = 0
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.active = 0
        self.max_active = 0
        self.started = threading.Semaphore(0)  # released once per invocation that starts
        self._lock = threading.Lock()
        fake = self

        class _Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                parts = self.path.split("?")[0].strip("/").split("/")
                if len(parts) != 4 or parts[:2] != ["2015-03-31", "functions"] \
                        or parts[3] != "invocations":
                    self._send(Reply(404, {"message": "not found"}))
                    return
                length = int(self.headers.get("Content-Length", 0))
                body = self.rfile.read(length)
                if self.headers.get("X-Amz-Invocation-Type") == "DryRun":
                    with fake._lock:
                        fake.dry_runs += 1
                    self._send(fake.dry_run(parts[2]))
                    return
                payload = json.loads(body or b"{}")
                reply = fake._call(parts[2], payload)
                self._send(reply)

            def _send(self, reply: Reply) -> None:
                body = reply.body if isinstance(reply.body, bytes) else \
                    json.dumps(reply.body).encode()
                self.send_response(reply.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.send_header("x-amzn-RequestId", "fake-req")
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def _call(self, name: str, payload: dict[str, Any]) -> Reply:
        with self._lock:
            self.calls.append((name, payload))
            self.active += 1
            self.max_active = max(self.max_active, self.active)
        self.started.release()
        try:
            return self.behaviour(name, payload)
        finally:
            with self._lock:
                self.active -= 1

    def start(self) -> FakeLambda:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def wait_started(self, count: int = 1, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        for _ in range(count):
            if not self.started.acquire(timeout=max(0.0, deadline - time.monotonic())):
                raise TimeoutError("the fake Lambda was not invoked in time")
