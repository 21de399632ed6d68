"""Synchronous ``lambda:Invoke`` of the recognition function.

botocore's own retries are off for invoke (each SDK retry would run the function again, and a read
timeout would resend a request the function is still working on). Instead tenacity retries only
what cannot have run the function twice, or what Lambda tells us to retry: throttling (429
TooManyRequestsException), 5xx service errors and connection errors before the request was sent,
with full-jitter exponential backoff and a cap. A function error (``FunctionError`` in a 200
response) raises :class:`FunctionFailed`; anything else that is not a success raises too.

Every invocation asks for its log tail (``LogType=Tail``): the REPORT line at its end says what
the invocation was billed (:mod:`~openstack_handler.daemon.report`), on AWS and on our own Lambda
service alike.
"""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import botocore
import structlog
import tenacity
from botocore.config import Config
from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ReadTimeoutError,
)

from openstack_handler import __version__
from openstack_handler.daemon.errors import (
    FunctionFailed,
    InvokeFailed,
    InvokeInterrupted,
    InvokeUnavailable,
    TargetRefused,
)
from openstack_handler.daemon.report import InvocationReport, report_from_log_result

log = structlog.get_logger(__name__)

_THROTTLE_CODES = frozenset({"TooManyRequestsException", "ThrottlingException", "Throttling",
                             "EC2ThrottledException", "ResourceNotReadyException"})


#: The daemon's User-Agent for every AWS call (botocore's ``user_agent`` setting). It names the
#: daemon in CloudTrail, and a fixed string spares botocore rebuilding its default one twice per
#: request (2.3 → 2.0 ms of CPU per call on the benchmark machine).
USER_AGENT = (f"openstack-handler/{__version__} botocore/{botocore.__version__} "
              f"Python/{platform.python_version()}")


def lambda_client_config(*, function_timeout_s: int, concurrency: int) -> Config:
    """botocore config for the invoke client: long read timeout, SDK retries off, enough sockets."""
    return Config(
        read_timeout=function_timeout_s + 30,
        connect_timeout=10,
        retries={"total_max_attempts": 1, "mode": "standard"},
        max_pool_connections=max(10, concurrency + 2),
        tcp_keepalive=True,
        user_agent=USER_AGENT,
    )


def is_retryable_invoke_error(exc: BaseException) -> bool:
    """True for errors where invoking again is safe and useful (pure; unit-tested)."""
    if isinstance(exc, EndpointConnectionError | ConnectTimeoutError):
        return True  # the request never reached Lambda
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
        return error.get("Code") in _THROTTLE_CODES or status == 429 or status >= 500
    return False


def _status(exc: ClientError) -> int:
    return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)


def backoff_wait(*, initial_s: float, cap_s: float) -> tenacity.wait.wait_base:
    """Full-jitter exponential backoff: uniform(0, min(cap, initial * 2**(attempt-1)))."""
    return tenacity.wait_random_exponential(multiplier=initial_s, max=cap_s)


@dataclass(frozen=True)
class Invoked:
    """A successful invocation: the function's JSON result and what Lambda reported of it."""

    result: Any
    report: InvocationReport | None  #: None when the answer carried no REPORT line
    wall_ms: float  #: from sending the request to reading the answer, our retries included


class LambdaInvoker:
    """Invokes one function synchronously and returns its parsed JSON result."""

    def __init__(self, *, client: Any, function_name: str, max_attempts: int = 6,
                 backoff_initial_s: float = 0.5, backoff_max_s: float = 20.0,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.client = client
        self.function_name = function_name
        self._retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception(is_retryable_invoke_error),
            wait=backoff_wait(initial_s=backoff_initial_s, cap_s=backoff_max_s),
            stop=tenacity.stop_after_attempt(max_attempts),
            before_sleep=self._before_sleep,
            sleep=sleep,
            reraise=True,
        )

    def invoke(self, payload: Mapping[str, Any]) -> Any:
        """Invoke with *payload*; return the decoded JSON the function returned.

        Raises :class:`FunctionFailed` (the function raised), :class:`InvokeUnavailable` (still
        throttled/unavailable after our retries; retryable) or :class:`InvokeFailed` (rejected).
        """
        return self.run(payload).result

    def run(self, payload: Mapping[str, Any]) -> Invoked:
        """:meth:`invoke`, with the invocation's REPORT and its time as the daemon saw it."""
        started = time.monotonic()
        data = json.dumps(payload).encode("utf-8")
        try:
            response = self._retrying(self._invoke_once, data)
        except ClientError as exc:
            error = exc.response.get("Error", {})
            message = f"{error.get('Code', 'ClientError')}: {error.get('Message', '')}"
            if is_retryable_invoke_error(exc):
                raise InvokeUnavailable(message) from exc
            if _status(exc) == 403:
                raise TargetRefused(message) from exc
            raise InvokeFailed(message) from exc
        except (EndpointConnectionError, ConnectTimeoutError) as exc:
            raise InvokeUnavailable(f"cannot reach Lambda: {exc}") from exc
        except (ReadTimeoutError, ConnectionClosedError) as exc:
            # The function may have run (or still be running): never resend; let SQS redeliver.
            raise InvokeInterrupted(f"no complete answer from Lambda: {exc}") from exc
        report = report_from_log_result(response.get("LogResult"))
        result = self._decode(response, report)
        return Invoked(result, report, (time.monotonic() - started) * 1000)

    def probe(self) -> None:
        """``Invoke(InvocationType=DryRun)``, once: Lambda answers 204 when the function exists
        and we may invoke it, and runs nothing. It touches no message, so an outage can be probed
        for as long as it lasts without a receive count climbing towards the dead-letter queue.
        It does not see throttling (a dry run takes no concurrency).

        Raises :class:`InvokeUnavailable` (unreachable, 5xx, throttled: probe again later) or
        :class:`InvokeFailed` (refused: no such function, no permission).
        """
        try:
            response = self.client.invoke(FunctionName=self.function_name,
                                          InvocationType="DryRun")
        except ClientError as exc:
            error = exc.response.get("Error", {})
            message = f"{error.get('Code', 'ClientError')}: {error.get('Message', '')}"
            if is_retryable_invoke_error(exc):
                raise InvokeUnavailable(message) from exc
            raise InvokeFailed(message) from exc
        except (EndpointConnectionError, ConnectTimeoutError, ReadTimeoutError,
                ConnectionClosedError) as exc:  # a dry run runs nothing: any of these is "down"
            raise InvokeUnavailable(f"cannot reach Lambda: {exc}") from exc
        if response.get("StatusCode") != 204:
            raise InvokeFailed(f"unexpected dry-run status {response.get('StatusCode')}")

    def _invoke_once(self, data: bytes) -> dict[str, Any]:
        response = self.client.invoke(FunctionName=self.function_name,
                                      InvocationType="RequestResponse", LogType="Tail",
                                      Payload=data)
        response["Payload"] = response["Payload"].read()
        return response

    def _decode(self, response: Mapping[str, Any], report: InvocationReport | None) -> Any:
        body: bytes = response["Payload"]
        if response.get("FunctionError"):
            try:
                doc = json.loads(body)
            except ValueError:
                doc = {}
            if not isinstance(doc, dict):
                doc = {}
            raise FunctionFailed(str(doc.get("errorType") or "FunctionError"),
                                 str(doc.get("errorMessage") or body[:500].decode("utf-8", "replace")),
                                 function_error=str(response["FunctionError"]), report=report)
        status = response.get("StatusCode")
        if status != 200:
            raise InvokeFailed(f"unexpected invoke status {status}")
        try:
            return json.loads(body) if body else None
        except ValueError as exc:
            raise InvokeFailed(f"function returned invalid JSON: {exc}") from exc

    def _before_sleep(self, state: tenacity.RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        # debug: the consumer logs an outage once when it starts and once when it ends
        log.debug("invoke.retry", function=self.function_name, attempt=state.attempt_number,
                 wait_s=round(state.next_action.sleep, 3) if state.next_action else None,
                 error=type(exc).__name__, detail=str(exc)[:300])
