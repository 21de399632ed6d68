"""HTTP face of the local Lambda: the Invoke REST contract boto3 speaks (and `sam local
start-lambda` serves), plus GetFunction/ListFunctions for status checks and a health endpoint.
Function URL configs, permissions and event source mappings are routed to
:mod:`~lambda_service.control`.

With the spec's ``authenticate`` on, every request but ``GET /health`` must be signed with SigV4
by one of the spec's credentials (:mod:`~lambda_service.sigv4`, botocore's own signer), and one
that is not is answered as Lambda answers it — 403 ``MissingAuthenticationTokenException`` (not
signed), ``UnrecognizedClientException`` (an unknown access key) or ``InvalidSignatureException``
(a wrong, malformed or expired signature) — before anything is routed: nothing runs.

Admin (not part of Lambda's API): ``GET /_faults`` shows each function's fault spec, and
``POST /_faults[?function=NAME]`` with a fault-spec JSON body replaces it (every function when no
name is given) — see :mod:`lambda_service.faults`.
"""

from __future__ import annotations

import base64
import binascii
import json
import urllib.parse
from typing import Any

import structlog

from lambda_service import sigv4
from lambda_service.control import ControlPlane
from lambda_service.errors import (
    InvalidParameterValue,
    InvalidSignature,
    MissingAuthenticationToken,
    ServiceError,
    UnrecognizedClient,
)
from lambda_service.faults import FaultSpec
from lambda_service.net import JSONResponses, NoDelayHTTPServer
from lambda_service.service import Invocation, InvocationType, LambdaService, Outcome

log = structlog.get_logger()

API_PREFIX = "/2015-03-31/functions"
HEALTH_PATH = "/health"
FAULTS_PATH = "/_faults"


class LambdaHTTPServer(NoDelayHTTPServer):
    """The Lambda API's server: the service and its control plane behind one handler."""

    request_queue_size = 128

    def __init__(self, address: tuple[str, int], service: LambdaService,
                 control: ControlPlane) -> None:
        self.service = service
        self.control = control
        super().__init__(address, LambdaRequestHandler)

class LambdaRequestHandler(JSONResponses):
    """Routes the few Lambda API calls we serve; API errors become AWS-style JSON errors."""

    protocol_version = "HTTP/1.1"  # keep-alive: boto3 reuses its connections
    server: LambdaHTTPServer

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the stdlib's per-request stderr line; invocations are logged by the pool."""

    # -- who calls ---------------------------------------------------------------------------
    def _authorized(self, body: bytes) -> bool:
        """True when the request may go on; else the 403 is sent (and why is logged, not
        told: the caller learns only Lambda's error type)."""
        spec = self.server.service.spec
        if not spec.authenticate:
            return True
        try:
            sigv4.verify(method=self.command, target=self.path, headers=list(self.headers.items()),
                         body=body, credentials=spec.credentials, region=spec.region,
                         account_id=spec.account_id)
        except sigv4.AccessDenied as exc:
            error: ServiceError
            if isinstance(exc, sigv4.MissingAuthentication):
                error = MissingAuthenticationToken("Missing Authentication Token")
            elif isinstance(exc, sigv4.UnknownAccessKey):
                error = UnrecognizedClient("The security token included in the request is "
                                           "invalid.")
            else:
                error = InvalidSignature(
                    "The request signature we calculated does not match the signature you "
                    "provided. Check your AWS Secret Access Key and signing method. Consult "
                    "the service documentation for details.")
            log.warning("request_refused", method=self.command, path=self.path.split("?")[0],
                        client=self.client_address[0], error_type=error.error_type,
                        reason=str(exc))
            self._send_service_error(error)
            return False
        return True

    # -- routing -----------------------------------------------------------------------------
    def do_GET(self) -> None:
        path, _ = self._split_path()
        service = self.server.service
        if path != HEALTH_PATH and not self._authorized(b""):
            return
        if path == HEALTH_PATH:
            health = service.health()
            health.update(self.server.control.health())
            self.send_json(200 if health["status"] == "ready" else 503, health)
            return
        if self._route_control(b""):
            return
        if path == FAULTS_PATH:
            self.send_json(200, service.fault_specs())
            return
        # the function-management routes (ListFunctions, GetFunction, …) are the control
        # plane's: lambda_service.functions
        self._send_error_json(404, "ResourceNotFoundException", f"No route for {path}")

    def do_POST(self) -> None:
        path, query = self._split_path()
        body = self._read_body()
        if not self._authorized(body):
            return
        if self._route_control(body):
            return
        if path == FAULTS_PATH:
            self._set_faults(query, body)
            return
        parts = self._function_parts(path)
        if parts is None or len(parts) != 2 or parts[1] != "invocations":
            self._send_error_json(404, "ResourceNotFoundException", f"No route for {path}")
            return
        try:
            outcome = self.server.service.invoke(self._parse_invocation(parts[0], query, body))
        except ServiceError as exc:
            self._send_service_error(exc)
            return
        self._send_outcome(outcome)

    def do_PUT(self) -> None:
        body = self._read_body()
        if self._authorized(body) and not self._route_control(body):
            self._send_error_json(404, "ResourceNotFoundException", f"No route for {self.path}")

    def do_DELETE(self) -> None:
        body = self._read_body()
        if self._authorized(body) and not self._route_control(body):
            self._send_error_json(404, "ResourceNotFoundException", f"No route for {self.path}")

    def _route_control(self, body: bytes) -> bool:
        """Answer a Function URL, permission or event source mapping call; False if the path is
        not one of theirs."""
        control = self.server.control
        path, query = self._split_path()
        try:
            answer = control.route(self.command, path, query, body)
        except ServiceError as exc:
            self._send_service_error(exc)
            return True
        if answer is None:
            return False
        status, data = answer
        self.send_body(status, b"" if data is None else json.dumps(data).encode())
        return True

    def _set_faults(self, query: dict[str, list[str]], body: bytes) -> None:
        try:
            spec = FaultSpec.from_json(json.loads(body or b"{}"))
        except (UnicodeDecodeError, ValueError) as exc:  # JSONDecodeError, FaultSpecError
            self._send_error_json(400, "InvalidParameterValueException", f"bad fault spec: {exc}")
            return
        try:
            specs = self.server.service.set_faults(spec, (query.get("function") or [None])[0])
        except ServiceError as exc:
            self._send_service_error(exc)
            return
        log.info("faults_configured", faults=spec.to_json(), function=query.get("function"))
        self.send_json(200, specs)

    # -- parsing -----------------------------------------------------------------------------
    def _split_path(self) -> tuple[str, dict[str, list[str]]]:
        parsed = urllib.parse.urlsplit(self.path)
        return parsed.path.rstrip("/") or "/", urllib.parse.parse_qs(parsed.query)

    @staticmethod
    def _function_parts(path: str) -> list[str] | None:
        if path == API_PREFIX:
            return []
        if not path.startswith(API_PREFIX + "/"):
            return None
        return [urllib.parse.unquote(p) for p in path[len(API_PREFIX) + 1:].split("/")]

    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _parse_invocation(self, function: str, query: dict[str, list[str]],
                          body: bytes) -> Invocation:
        raw_type = self.headers.get("X-Amz-Invocation-Type") or "RequestResponse"
        try:
            invocation_type = InvocationType(raw_type)
        except ValueError as exc:
            raise InvalidParameterValue(f"Unsupported invocation type {raw_type!r}") from exc
        client_context = None
        if header := self.headers.get("X-Amz-Client-Context"):
            try:
                client_context = json.loads(base64.b64decode(header))
            except (binascii.Error, ValueError) as exc:
                raise InvalidParameterValue("Client context must be base64-encoded JSON") from exc
        return Invocation(function=function, payload=body, invocation_type=invocation_type,
                          qualifier=(query.get("Qualifier") or [None])[0],
                          want_logs=self.headers.get("X-Amz-Log-Type") == "Tail",
                          client_context=client_context)

    # -- responses ---------------------------------------------------------------------------
    def _send_outcome(self, outcome: Outcome) -> None:
        headers = {"X-Amz-Executed-Version": "$LATEST", "x-amzn-RequestId": outcome.request_id}
        result = outcome.result
        body = b""
        if result is not None:
            body = result.payload
            if result.function_error:
                headers["X-Amz-Function-Error"] = result.function_error
            if result.log_tail is not None:
                headers["X-Amz-Log-Result"] = base64.b64encode(
                    result.log_tail.encode()).decode()
        self.send_body(outcome.status, body, headers)

    def _send_service_error(self, exc: ServiceError) -> None:
        self._send_error_json(exc.status, exc.error_type, exc.message, **exc.extra)

    def _send_error_json(self, status: int, error_type: str, message: str, **extra: Any) -> None:
        body = json.dumps({"Type": "User", "message": message, **extra}).encode()
        headers = {"x-amzn-ErrorType": error_type}
        if status == 429:
            headers["Retry-After"] = "1"
        self.send_body(status, body, headers)

