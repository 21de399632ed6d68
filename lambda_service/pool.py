"""A pool of warm execution environments for one function: concurrency, timeout and memory
enforcement.

The pool is the "reserved concurrency" of a function: one invocation per environment at a time;
when none is free a synchronous invoke is throttled (429), an asynchronous one waits its turn
(:mod:`~lambda_service.async_invoke` queues them and blocks for a free one). An
environment that times out, goes over its memory or dies is killed and replaced in the
background; the slot counts as "starting" meanwhile, and a request that finds only starting
environments waits for one (a cold start) instead of being throttled.

An environment is a :class:`Sandbox`: a spawned worker process that imports a ``module:function``
handler (the default, fast: :class:`WorkerSandboxes`), or a function's container image run
through the Lambda Runtime API (:mod:`lambda_service.environment`).
"""

from __future__ import annotations

import itertools
import multiprocessing
import os
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from typing import Any, Protocol

import structlog

from lambda_service.spec import EndpointSpec, FunctionSpec
from lambda_service.worker import (
    InvocationRequest,
    WorkerConfig,
    WorkerReady,
    WorkerReply,
    error_payload,
    worker_main,
)

log = structlog.get_logger()

POLL_S = 0.25  # how often a busy worker's memory is checked (its reply and deadline wake it at once)
_PAGE = os.sysconf("SC_PAGE_SIZE")


class Throttled(Exception):
    """Every worker of the function is busy (reserved concurrency reached)."""


class PoolStopped(Exception):
    """The pool is shutting down and takes no more invocations."""


class WorkerStartError(Exception):
    """A worker process died or hung before it finished importing its handler."""


class SandboxExited(Exception):
    """The environment's process ended while an invocation was running (the message says how)."""


class Sandbox(Protocol):
    """One execution environment, as the pool drives it."""

    invocations: int

    @property
    def pid(self) -> int: ...

    def wait_ready(self, timeout_s: float) -> WorkerReady:
        """Block until its init is over (raise WorkerStartError if it never got there)."""
        ...

    def send(self, request: InvocationRequest) -> None:
        """Start *request* (raise SandboxExited if the environment is gone)."""
        ...

    def poll_reply(self, timeout_s: float) -> WorkerReply | None:
        """The running invocation's reply once there is one (None: not yet, after *timeout_s*);
        raise SandboxExited if the environment died instead."""
        ...

    def rss_bytes(self) -> int: ...

    def kill(self) -> None: ...

    def reap(self, timeout_s: float = 5.0) -> int | None: ...


class SandboxFactory(Protocol):
    """Makes a function's environments; `open` before the first, `close` after the last."""

    def open(self) -> None: ...

    def create(self, config: WorkerConfig) -> Sandbox: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class InvocationResult:
    """What the HTTP layer turns into a response: payload plus `X-Amz-Function-Error` value."""

    request_id: str
    payload: bytes
    function_error: str | None = None
    log_tail: str | None = None
    duration_ms: float = 0.0


class _Worker:
    """Parent-side handle of one spawned worker process and its pipe."""

    def __init__(self, ctx: Any, config: WorkerConfig) -> None:
        self.conn, child_conn = ctx.Pipe(duplex=True)
        self.process = ctx.Process(target=worker_main, args=(config, child_conn),
                                   name=f"lambda-{config.function_name}")
        self.process.start()
        child_conn.close()
        self.ready: WorkerReady | None = None
        self.invocations = 0

    @property
    def pid(self) -> int:
        return int(self.process.pid or 0)

    def wait_ready(self, timeout_s: float) -> WorkerReady:
        conn: Connection = self.conn
        if not conn.poll(timeout_s):
            raise WorkerStartError(f"worker {self.pid} not ready after {timeout_s:.0f} s")
        try:
            self.ready = conn.recv()
        except (EOFError, OSError) as exc:
            raise WorkerStartError(f"worker {self.pid} exited during init") from exc
        return self.ready

    def send(self, request: InvocationRequest) -> None:
        try:
            self.conn.send(request)
        except (OSError, ValueError) as exc:
            raise SandboxExited("Runtime exited before the invocation") from exc

    def poll_reply(self, timeout_s: float) -> WorkerReply | None:
        if not self.conn.poll(timeout_s):
            return None
        try:
            return self.conn.recv()
        except (EOFError, OSError) as exc:
            code = self.reap(1.0)
            raise SandboxExited(f"Runtime exited with error: {describe_exit(code)}") from exc

    def rss_bytes(self) -> int:
        """Resident set size from /proc (0 if the process is gone)."""
        return process_rss(self.pid)

    def kill(self) -> None:
        self.process.kill()
        self.conn.close()

    def reap(self, timeout_s: float = 5.0) -> int | None:
        self.process.join(timeout_s)
        return self.process.exitcode


class WorkerSandboxes:
    """Worker processes (spawned, importing the handler by name): the default environments."""

    def __init__(self) -> None:
        self._ctx = multiprocessing.get_context("spawn")

    def open(self) -> None:
        """Nothing to prepare."""

    def create(self, config: WorkerConfig) -> Sandbox:
        return _Worker(self._ctx, config)

    def close(self) -> None:
        """Nothing to release."""


def process_rss(pid: int) -> int:
    """A process's resident set size from /proc (0 if it is gone)."""
    try:
        with open(f"/proc/{pid}/statm", "rb") as statm:
            return int(statm.read().split()[1]) * _PAGE
    except (OSError, IndexError, ValueError):
        return 0


class FunctionPool:
    """Warm environments of one function; `invoke()` is the single place an invocation is run."""

    def __init__(self, function: FunctionSpec, endpoint: EndpointSpec, *,
                 init_timeout_s: float = 120.0, sandboxes: SandboxFactory | None = None) -> None:
        self.function = function
        self._endpoint = endpoint
        self._init_timeout_s = init_timeout_s
        self._sandboxes = sandboxes or WorkerSandboxes()
        self._cond = threading.Condition()
        self._idle: list[Sandbox] = []
        self._busy = 0
        self._starting = 0
        self._stopped = False
        self._all: set[Sandbox] = set()
        self._init_error: str | None = None
        self._counters: Counter[str] = Counter()
        self._seq = itertools.count(1)

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        """Spawn every worker (they import the handler concurrently)."""
        self._sandboxes.open()
        for _ in range(self.function.concurrency):
            self._spawn_in_background()

    def wait_warm(self, timeout_s: float) -> bool:
        """True once no worker is still starting (all imported their handler)."""
        with self._cond:
            return self._cond.wait_for(lambda: self._starting == 0, timeout_s)

    def retire(self, timeout_s: float) -> None:
        """Stop once the invocations running now have ended (at most *timeout_s*), in the
        background: what a new version of the function replaces, or a deleted one."""
        def wait_then_stop() -> None:
            with self._cond:
                self._cond.wait_for(lambda: self._busy == 0, timeout_s)
            self.stop()

        threading.Thread(target=wait_then_stop, daemon=True,
                         name=f"retire-{self.function.name}").start()

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            workers = list(self._all)
            self._cond.notify_all()
        for worker in workers:
            worker.kill()
        for worker in workers:
            worker.reap()
        self._sandboxes.close()

    # -- invocation --------------------------------------------------------------------------
    def invoke(self, payload: bytes, *, request_id: str | None = None, want_logs: bool = False,
               client_context: dict[str, Any] | None = None, block: bool = False,
               ) -> InvocationResult:
        """Run one invocation on a free worker; raise Throttled when none is free and not *block*."""
        worker = self._acquire(block=block)
        return self._execute(worker, request_id or str(uuid.uuid4()), payload, want_logs,
                             client_context)

    def occupy(self, seconds: float) -> None:
        """Hold one worker for *seconds* without running anything (an injected hang/timeout:
        the slot is as busy as a hung handler's); raise Throttled when none is free."""
        worker = self._acquire(block=False)
        try:
            time.sleep(seconds)
        finally:
            self._release(worker)

    def stats(self) -> dict[str, Any]:
        with self._cond:
            return {"concurrency": self.function.concurrency, "idle": len(self._idle),
                    "busy": self._busy, "starting": self._starting,
                    "pids": sorted(w.pid for w in self._all), "init_error": self._init_error,
                    **self._counters}

    # -- internals ---------------------------------------------------------------------------
    def _worker_config(self) -> WorkerConfig:
        stamp = datetime.now(UTC).strftime("%Y/%m/%d")
        return WorkerConfig(
            function_name=self.function.name, handler=self.function.handler,
            memory_mb=self.function.memory_mb,
            function_arn=self._endpoint.function_arn(self.function.name),
            region=self._endpoint.region, environment=dict(self.function.environment),
            log_stream_name=f"{stamp}/[$LATEST]{uuid.uuid4().hex}",
            code_path=self.function.code_path)

    def _spawn_in_background(self) -> None:
        with self._cond:
            self._starting += 1
        threading.Thread(target=self._start_worker, daemon=True,
                         name=f"spawn-{self.function.name}-{next(self._seq)}").start()

    def _start_worker(self) -> None:
        """Start one worker and hand it to the idle list; retry (with a pause) if it dies in init."""
        delay = 0.5
        while True:
            with self._cond:
                if self._stopped:
                    self._starting -= 1
                    self._cond.notify_all()
                    return
            try:
                worker = self._sandboxes.create(self._worker_config())
            except OSError as exc:  # e.g. no port or process left: like a worker dying in init
                log.error("worker_start_failed", function=self.function.name, error=str(exc))
                time.sleep(delay)
                delay = min(delay * 2, 10.0)
                continue
            with self._cond:
                self._all.add(worker)
            try:
                ready = worker.wait_ready(self._init_timeout_s)
            except WorkerStartError as exc:
                log.error("worker_start_failed", function=self.function.name, error=str(exc))
                worker.kill()
                worker.reap()
                with self._cond:
                    self._all.discard(worker)
                time.sleep(delay)
                delay = min(delay * 2, 10.0)
                continue
            log.info("worker_ready", function=self.function.name, pid=ready.pid,
                     init_ms=round(ready.init_ms, 1), init_error=ready.init_error)
            with self._cond:
                self._init_error = ready.init_error
                self._starting -= 1
                if self._stopped:
                    self._cond.notify_all()
                    break
                self._idle.append(worker)
                self._cond.notify_all()
                return
        worker.kill()
        worker.reap()

    def _acquire(self, *, block: bool) -> Sandbox:
        deadline = time.monotonic() + self._init_timeout_s
        with self._cond:
            while True:
                if self._stopped:
                    raise PoolStopped(self.function.name)
                if self._idle:
                    self._busy += 1
                    return self._idle.pop()  # LIFO: the warmest worker
                if not block and self._starting == 0:
                    self._counters["throttles"] += 1
                    raise Throttled(self.function.name)
                remaining = deadline - time.monotonic()
                if not block and remaining <= 0:
                    self._counters["throttles"] += 1
                    raise Throttled(self.function.name)
                self._cond.wait(remaining if not block else None)

    def _execute(self, worker: Sandbox, request_id: str, payload: bytes, want_logs: bool,
                 client_context: dict[str, Any] | None) -> InvocationResult:
        """Run on an acquired worker, then give it back (or replace it if it had to be killed)."""
        request = InvocationRequest(request_id, payload, time.monotonic() + self.function.timeout_s,
                                    want_logs, client_context)
        result, healthy = self._run(worker, request)
        if healthy:
            self._release(worker)
        else:
            self._replace(worker)
        with self._cond:
            self._counters["invocations"] += 1
            # with the count, the mean duration per invocation (a pool agent's seconds/message)
            self._counters["duration_ms_total"] += round(result.duration_ms)
        if result.function_error:
            self._count("errors")
        log.info("invocation", function=self.function.name, request_id=request_id,
                 pid=worker.pid, duration_ms=round(result.duration_ms, 2),
                 error=result.function_error)
        return result

    def _count(self, name: str) -> None:
        with self._cond:
            self._counters[name] += 1

    def _release(self, worker: Sandbox) -> None:
        with self._cond:
            self._busy -= 1
            if self._stopped:
                return
            self._idle.append(worker)
            self._cond.notify_all()

    def _replace(self, worker: Sandbox) -> None:
        """Kill a broken worker now; reap it and start its successor in the background."""
        worker.kill()
        with self._cond:
            self._busy -= 1
            self._all.discard(worker)
        threading.Thread(target=worker.reap, daemon=True).start()
        self._spawn_in_background()

    def _run(self, worker: Sandbox, request: InvocationRequest) -> tuple[InvocationResult, bool]:
        """Send *request* to *worker* and watch it; returns (result, worker still usable)."""
        started = time.monotonic()
        limit = self.function.memory_mb * 1024 * 1024
        rid = request.request_id

        def failure(error_type: str, message: str) -> tuple[InvocationResult, bool]:
            self._count(error_type)
            log.warning("worker_killed", function=self.function.name, pid=worker.pid,
                        request_id=rid, error_type=error_type)
            payload = error_payload(error_type, f"RequestId: {rid} Error: {message}")
            return InvocationResult(rid, payload, "Unhandled", None,
                                    (time.monotonic() - started) * 1000), False

        try:
            worker.send(request)
        except SandboxExited as exc:
            return failure("Runtime.ExitError", str(exc))
        worker.invocations += 1
        while True:
            remaining = request.deadline - time.monotonic()
            try:
                reply = worker.poll_reply(max(0.0, min(remaining, POLL_S)))
            except SandboxExited as exc:
                return failure("Runtime.ExitError", str(exc))
            if reply is not None:
                rss = worker.rss_bytes()
                if rss > limit:
                    return failure("Runtime.OutOfMemory", _oom_message(rss, self.function))
                if reply.discard:
                    self._count(reply.error_type or "discarded")
                return (InvocationResult(rid, reply.payload, "Unhandled" if reply.error else None,
                                         reply.log_tail, (time.monotonic() - started) * 1000),
                        not reply.discard)
            if remaining <= 0:
                return failure("Sandbox.Timedout",
                               f"Task timed out after {self.function.timeout_s:.2f} seconds")
            rss = worker.rss_bytes()
            if rss > limit:
                return failure("Runtime.OutOfMemory", _oom_message(rss, self.function))


def describe_exit(code: int | None) -> str:
    if code is None:
        return "unknown"
    return f"signal: {-code}" if code < 0 else f"exit status {code}"


def _oom_message(rss: int, function: FunctionSpec) -> str:
    return (f"Runtime exited with error: signal: killed (memory {rss // 2**20} MB over the "
            f"{function.memory_mb} MB limit)")
