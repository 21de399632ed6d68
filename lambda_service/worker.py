"""The inside of one warm Lambda "sandbox": a spawned process that imports the handler once and
then serves invocations sent over a pipe, one at a time, like a Lambda execution environment.

This module runs in the worker process: it must stay light (no boto3, no torch) so that what the
worker's memory holds is the handler's own footprint.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import math
import os
import resource
import signal
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

LOG_TAIL_BYTES = 4096  # what Lambda returns in X-Amz-Log-Result


def report_line(request_id: str, *, duration_ms: float, memory_mb: int, max_memory_mb: int,
                init_ms: float | None = None) -> str:
    """Lambda's ``REPORT`` platform line, tab-separated as Lambda writes it: billed per
    millisecond, rounded up; ``Init Duration`` only on the invocation that met a cold start."""
    line = (f"REPORT RequestId: {request_id}\tDuration: {duration_ms:.2f} ms\t"
            f"Billed Duration: {max(1, math.ceil(duration_ms))} ms\t"
            f"Memory Size: {memory_mb} MB\tMax Memory Used: {max_memory_mb} MB")
    if init_ms is not None:
        line += f"\tInit Duration: {init_ms:.2f} ms"
    return line


@dataclass(frozen=True)
class WorkerConfig:
    """What a worker needs to know about its function (plain data: it crosses a spawn)."""

    function_name: str
    handler: str
    memory_mb: int
    function_arn: str
    region: str
    environment: dict[str, str]
    log_stream_name: str
    code_path: str = ""  #: first on sys.path: where the function's own code was unpacked


@dataclass(frozen=True)
class InvocationRequest:
    """One invocation as the worker receives it; `deadline` is on the shared CLOCK_MONOTONIC."""

    request_id: str
    payload: bytes
    deadline: float
    want_logs: bool = False
    client_context: dict[str, Any] | None = None


@dataclass(frozen=True)
class WorkerReply:
    """The worker's answer: the JSON payload, and whether it describes a handler error."""

    payload: bytes
    error: bool
    log_tail: str | None = None
    #: the environment must not serve again (an image whose init failed: Lambda starts anew)
    discard: bool = False
    #: what kind of error, when the platform rather than the handler produced it
    error_type: str | None = None


@dataclass(frozen=True)
class WorkerReady:
    """Sent once after the handler import; an import error is reported per invocation later."""

    pid: int
    init_ms: float
    init_error: str | None


class LambdaContext:
    """The context object of the Python Lambda runtime (the attributes handlers actually use)."""

    def __init__(self, config: WorkerConfig, request: InvocationRequest) -> None:
        self.aws_request_id = request.request_id
        self.function_name = config.function_name
        self.function_version = "$LATEST"
        self.invoked_function_arn = config.function_arn
        self.memory_limit_in_mb = config.memory_mb
        self.log_group_name = f"/aws/lambda/{config.function_name}"
        self.log_stream_name = config.log_stream_name
        self.client_context = request.client_context
        self.identity = None
        self._deadline = request.deadline

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


def error_payload(error_type: str, message: str, stack: list[str] | None = None) -> bytes:
    """The body Lambda returns with `X-Amz-Function-Error: Unhandled`."""
    body: dict[str, Any] = {"errorMessage": message, "errorType": error_type}
    if stack is not None:
        body["stackTrace"] = stack
    return json.dumps(body).encode()


class _Tee(io.TextIOBase):
    """Copies handler output to the worker's real stream and, when asked, into a buffer."""

    def __init__(self, real: Any, buffer: io.StringIO) -> None:
        self._real = real
        self._buffer = buffer

    def write(self, text: str) -> int:
        self._buffer.write(text)
        return self._real.write(text)

    def flush(self) -> None:
        self._real.flush()


@contextlib.contextmanager
def _captured(enabled: bool) -> Iterator[io.StringIO]:
    buffer = io.StringIO()
    if not enabled:
        yield buffer
        return
    out, err = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = _Tee(out, buffer), _Tee(err, buffer)
    try:
        yield buffer
    finally:
        sys.stdout, sys.stderr = out, err


def _load_handler(handler: str) -> Callable[[Any, LambdaContext], Any]:
    from lambda_service.spec import split_handler  # stdlib-only module

    module_name, func_name = split_handler(handler)
    module = importlib.import_module(module_name)
    func = getattr(module, func_name)
    if not callable(func):
        raise TypeError(f"{handler} is not callable")
    return func


def _invoke(func: Callable[[Any, LambdaContext], Any] | None, init_error: str | None,
            config: WorkerConfig, request: InvocationRequest,
            init_ms: float | None = None) -> WorkerReply:
    """Run one invocation; *init_ms* is the worker's init time when this is its first."""
    if func is None:
        return WorkerReply(error_payload("Runtime.ImportModuleError", init_error or ""), True)
    started = time.monotonic()
    with _captured(request.want_logs) as logs:
        print(f"START RequestId: {request.request_id} Version: $LATEST", file=sys.stderr)
        error = True
        try:
            event = json.loads(request.payload) if request.payload else {}
            result = func(event, LambdaContext(config, request))
        except Exception as exc:  # noqa: BLE001 -- the runtime boundary: any handler error is data
            tb = traceback.extract_tb(exc.__traceback__)
            payload = error_payload(type(exc).__name__, str(exc), traceback.format_list(tb))
            traceback.print_exc()
        else:
            try:
                payload = json.dumps(result).encode()
                error = False
            except (TypeError, ValueError) as exc:
                payload = error_payload("Runtime.MarshalError", f"Unable to marshal response: {exc}")
        elapsed_ms = (time.monotonic() - started) * 1000
        print(f"END RequestId: {request.request_id}", file=sys.stderr)
        max_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024  # KiB on Linux
        print(report_line(request.request_id, duration_ms=elapsed_ms,
                          memory_mb=config.memory_mb, max_memory_mb=max_mb, init_ms=init_ms),
              file=sys.stderr)
    tail = None
    if request.want_logs:
        tail = logs.getvalue().encode()[-LOG_TAIL_BYTES:].decode(errors="replace")
    return WorkerReply(payload, error, tail)


def worker_main(config: WorkerConfig, conn: Connection) -> None:
    """Entry point of the spawned worker: set the environment, import, then serve until EOF."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the endpoint decides when workers stop
    os.environ.update({
        "AWS_LAMBDA_FUNCTION_NAME": config.function_name,
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(config.memory_mb),
        "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{config.function_name}",
        "AWS_LAMBDA_LOG_STREAM_NAME": config.log_stream_name,
        "AWS_REGION": config.region,
        "AWS_DEFAULT_REGION": config.region,
        "_HANDLER": config.handler,
    })
    os.environ.update(config.environment)  # before the import: module-scope clients read it
    if config.code_path:
        sys.path.insert(0, config.code_path)
        os.environ["LAMBDA_TASK_ROOT"] = config.code_path
        os.chdir(config.code_path)  # Lambda runs a function in its task root (/var/task)
    started = time.monotonic()
    func: Callable[[Any, LambdaContext], Any] | None = None
    init_error: str | None = None
    try:
        func = _load_handler(config.handler)
    except Exception as exc:  # noqa: BLE001 -- reported to every invocation, like Lambda does
        init_error = f"Unable to import module '{config.handler}': {type(exc).__name__}: {exc}"
        traceback.print_exc()
    init_ms: float | None = (time.monotonic() - started) * 1000
    conn.send(WorkerReady(os.getpid(), init_ms, init_error))
    while True:
        try:
            request = conn.recv()
        except (EOFError, OSError):
            return  # the endpoint closed our pipe (or died): the sandbox goes away
        conn.send(_invoke(func, init_error, config, request, init_ms))
        init_ms = None  # the environment's first invocation reports its init, the rest do not
