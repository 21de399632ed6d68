"""The Lambda service behind the HTTP layer: function lookup and the one invocation dispatch point.

`LambdaService.invoke()` is where every invocation passes (sync, async, dry run), so fault
injection (:mod:`lambda_service.faults`) happens in this one method rather than in the HTTP handler or
the pools.
"""

from __future__ import annotations

import enum
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog

from lambda_service.async_invoke import AsyncInvocations, Destinations, QueueFull
from lambda_service.errors import (
    InvalidRequestContent,
    RequestTooLarge,
    ResourceConflict,
    ResourceNotFound,
    TooManyRequests,
)
from lambda_service.event_invoke_config import EventInvokeConfigs
from lambda_service.faults import Fault, FaultInjector, FaultSpec
from lambda_service.pool import FunctionPool, InvocationResult, SandboxFactory, Throttled
from lambda_service.spec import EndpointSpec, FunctionSpec
from lambda_service.worker import error_payload

log = structlog.get_logger()

MAX_SYNC_PAYLOAD = 6 * 1024 * 1024  # Lambda's 6 MB request/response limit (sync)
MAX_ASYNC_PAYLOAD = 256 * 1024  # and 256 KB for Event invocations


class InvocationType(enum.StrEnum):
    REQUEST_RESPONSE = "RequestResponse"
    EVENT = "Event"
    DRY_RUN = "DryRun"


@dataclass(frozen=True)
class Invocation:
    """One parsed Invoke API call."""

    function: str
    payload: bytes
    invocation_type: InvocationType = InvocationType.REQUEST_RESPONSE
    qualifier: str | None = None
    want_logs: bool = False
    client_context: dict[str, Any] | None = None


@dataclass(frozen=True)
class Outcome:
    """What the HTTP layer sends back for a successful API call (function errors included)."""

    status: int
    result: InvocationResult | None = None
    request_id: str = ""


def _no_sqs() -> Any:
    raise RuntimeError("this Lambda service was started without an SQS client: it cannot "
                       "deliver to destinations")


def _sandboxes(function: FunctionSpec) -> SandboxFactory | None:
    """Image functions run in image environments; handlers in worker processes (the default)."""
    if not function.image:
        return None
    from lambda_service.environment import ImageSandboxes  # buildah/nspawn: images only

    return ImageSandboxes(function)


class LambdaService:
    """Functions by name, each backed by a warm FunctionPool."""

    def __init__(self, spec: EndpointSpec, *, init_timeout_s: float = 120.0,
                 faults_override: FaultSpec | None = None,
                 sqs: Callable[[], Any] | None = None) -> None:
        """*sqs* makes the SQS client that destinations of Event invocations are sent with."""
        self.spec = spec
        self.pools = {f.name: FunctionPool(f, spec, init_timeout_s=init_timeout_s,
                                           sandboxes=_sandboxes(f))
                      for f in spec.functions}
        self.event_invoke_configs = EventInvokeConfigs()
        self.async_invocations = AsyncInvocations(
            self.pools, self.event_invoke_configs, Destinations(sqs or _no_sqs),
            function_arn=spec.function_arn, time_scale=spec.async_time_scale)
        self.faults = {f.name: FaultInjector(faults_override or f.faults)
                       for f in spec.functions}
        self.started_at = time.time()
        self._init_timeout_s = init_timeout_s
        self._faults_override = faults_override

    # -- functions made, changed and deleted through the API (lambda_service.functions) -------
    def add_function(self, function: FunctionSpec) -> FunctionPool:
        """Start *function*'s environments (in the background) and serve it."""
        if function.name in self.pools:
            raise ResourceConflict(f"Function already exist: {function.name}")
        pool = self._start_pool(function)
        self.faults[function.name] = FaultInjector(self._faults_override or function.faults)
        self.pools[function.name] = pool
        self.async_invocations.set_pool(function.name, pool)
        return pool

    def replace_function(self, function: FunctionSpec) -> FunctionPool:
        """Serve a new version of *function* (configuration, code or slots): new invocations go
        to fresh environments; the old ones finish what they run, then stop."""
        old = self.resolve(function.name, None)
        pool = self._start_pool(function)
        self.pools[function.name] = pool
        self.async_invocations.set_pool(function.name, pool)
        old.retire(old.function.timeout_s + 5)
        return pool

    def remove_function(self, name: str) -> FunctionSpec:
        old = self.resolve(name, None)
        del self.pools[old.function.name]
        self.faults.pop(old.function.name, None)
        self.async_invocations.remove(old.function.name)
        old.retire(old.function.timeout_s + 5)
        return old.function

    def _start_pool(self, function: FunctionSpec) -> FunctionPool:
        pool = FunctionPool(function, self.spec, init_timeout_s=self._init_timeout_s,
                            sandboxes=_sandboxes(function))
        pool.start()
        return pool

    def set_faults(self, spec: FaultSpec, function: str | None = None) -> dict[str, Any]:
        """Replace the fault spec of *function* (None: every function); returns all specs."""
        names = [self.resolve(function, None).function.name] if function else list(self.faults)
        for name in names:
            self.faults[name].configure(spec)
        return self.fault_specs()

    def fault_specs(self) -> dict[str, Any]:
        return {name: injector.spec.to_json() for name, injector in self.faults.items()}

    def start(self) -> None:
        for pool in list(self.pools.values()):
            pool.start()
        self.async_invocations.start()

    def stop(self) -> None:
        self.async_invocations.stop()
        for pool in list(self.pools.values()):
            pool.stop()

    def wait_warm(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        return all(p.wait_warm(max(0.0, deadline - time.monotonic()))
                   for p in list(self.pools.values()))

    def is_warm(self) -> bool:
        return all(p.stats()["starting"] == 0 for p in list(self.pools.values()))

    def health(self) -> dict[str, Any]:
        return {"status": "ready" if self.is_warm() else "starting",
                "functions": {name: {**pool.stats(), **self.faults[name].stats(),
                                     **self.async_invocations.stats(name)}
                              for name, pool in list(self.pools.items())}}

    def resolve(self, function: str, qualifier: str | None) -> FunctionPool:
        """Accept a name, a partial or full ARN (`...:function:NAME[:QUALIFIER]`)."""
        name = function
        if ":" in function:
            tail = function.split(":function:", 1)[-1] if ":function:" in function else function
            name, _, arn_qualifier = tail.partition(":")
            qualifier = qualifier or arn_qualifier or None
        pool = self.pools.get(name)
        if pool is None or qualifier not in (None, "$LATEST"):
            suffix = f":{qualifier}" if qualifier else ""
            raise ResourceNotFound(f"Function not found: {self.spec.function_arn(name)}{suffix}")
        return pool

    def invoke(self, invocation: Invocation) -> Outcome:
        """The single dispatch point for every invocation."""
        pool = self.resolve(invocation.function, invocation.qualifier)
        limit = (MAX_ASYNC_PAYLOAD if invocation.invocation_type is InvocationType.EVENT
                 else MAX_SYNC_PAYLOAD)
        if len(invocation.payload) > limit:
            raise RequestTooLarge(f"Request must be smaller than {limit} bytes for the "
                                  f"{invocation.invocation_type} invocation type")
        if invocation.payload:
            try:
                json.loads(invocation.payload)
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise InvalidRequestContent(
                    f"Could not parse request body into json: {exc}") from exc
        if invocation.invocation_type is InvocationType.DRY_RUN:
            return Outcome(204)
        if invocation.invocation_type is InvocationType.EVENT:
            try:
                request_id = self.async_invocations.submit(pool.function.name,
                                                           invocation.payload)
            except QueueFull as exc:
                raise TooManyRequests("Rate Exceeded.", Reason="AsyncEventQueueFull") from exc
            return Outcome(202, request_id=request_id)
        try:
            fault = self.faults[pool.function.name].decide(invocation.payload)
            if fault is not None:
                return self._inject(pool, fault)
            result = pool.invoke(invocation.payload, want_logs=invocation.want_logs,
                                 client_context=invocation.client_context)
        except Throttled as exc:
            raise TooManyRequests("Rate Exceeded.",
                                  Reason="ReservedFunctionConcurrentInvocationLimitExceeded",
                                  retryAfterSeconds="1") from exc
        if len(result.payload) > MAX_SYNC_PAYLOAD:
            oversized = error_payload("Function.ResponseSizeTooLarge",
                                      f"Response payload size exceeded maximum allowed payload "
                                      f"size ({MAX_SYNC_PAYLOAD} bytes).")
            result = InvocationResult(result.request_id, oversized, "Unhandled", result.log_tail,
                                      result.duration_ms)
        return Outcome(200, result, result.request_id)

    def _inject(self, pool: FunctionPool, fault: Fault) -> Outcome:
        """An injected failure in place of running the handler (raises Throttled for 429)."""
        request_id = str(uuid.uuid4())
        timeout_s = pool.function.timeout_s
        if fault is Fault.THROTTLE:
            raise Throttled(f"{pool.function.name} (injected)")
        if fault is Fault.ERROR:
            payload = error_payload("InjectedFault", f"RequestId: {request_id} Error: injected "
                                                     f"function error")
        else:  # a handler that hangs until the function times out
            pool.occupy(timeout_s)
            payload = error_payload("Sandbox.Timedout", f"RequestId: {request_id} Error: Task "
                                                        f"timed out after {timeout_s:.2f} seconds")
        log.info("invocation_fault_injected", function=pool.function.name, fault=fault.value,
                 request_id=request_id)
        return Outcome(200, InvocationResult(request_id, payload, "Unhandled"), request_id)
