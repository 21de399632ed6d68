"""Execution environments of a container-image function, run as Lambda runs them.

Each environment is the image's entry point (awslambdaric + the CMD handler, or the function's
own ImageConfig) started by ``systemd-nspawn`` in the image's root file system, read-only except a
fresh ``/tmp`` (tmpfs), as an unprivileged user, sharing the host's network so that its Runtime
API (:mod:`lambda_service.runtime_api`, one server per environment on 127.0.0.1) is
reachable, with Lambda's environment variables. Its init is over when the runtime first asks for
an invocation; an init error (``/init/error``, or the runtime exiting first) fails the invocation
with ``Runtime.InitError`` and the environment is discarded, so the next invocation starts a new
one. Timeouts, memory (the environment's processes together) and crashes are the pool's
(:class:`~lambda_service.pool.FunctionPool`), which kills and replaces the environment.

The root is one buildah working container of the image per function
(:class:`~lambda_service.image.ImageRoot`), mounted while the pool runs.
"""

from __future__ import annotations

import collections
import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import IO

import structlog

from lambda_service.image import ImageConfig, ImageRoot
from lambda_service.pool import SandboxExited, WorkerStartError, describe_exit, process_rss
from lambda_service.runtime_api import Invocation, RuntimeAPI, deadline_ms
from lambda_service.spec import FunctionSpec
from lambda_service.worker import (
    LOG_TAIL_BYTES,
    InvocationRequest,
    WorkerConfig,
    WorkerReady,
    WorkerReply,
    error_payload,
    report_line,
)

log = structlog.get_logger()

#: Lambda's sandbox user (sbx_user1051 is uid 993 there); nothing in the image runs as root.
SANDBOX_UID = 993
#: /tmp: Lambda's default ephemeral storage.
TMP_SIZE = "512m"
_PROPAGATE = Path("/run/systemd/nspawn/propagate")
#: Kept in memory per environment for `LogType: Tail` (Lambda returns the last 4 KB).
_LOG_BUFFER = 64 * 1024


class ImageSandboxes:
    """The environments of one image function (a :class:`~lambda_service.pool
    .SandboxFactory`): the image root is mounted on `open` and removed on `close`."""

    def __init__(self, function: FunctionSpec) -> None:
        if not function.image:
            raise ValueError(f"{function.name} has no image")
        self.function = function
        self._root = ImageRoot(function.image, function.name)
        self._config: ImageConfig | None = None

    def open(self) -> None:
        self._config = ImageConfig.read(self.function.image)
        self._root.open()

    def create(self, config: WorkerConfig) -> ImageEnvironment:
        if self._config is None or self._root.path is None:
            raise RuntimeError("ImageSandboxes.create before open")
        return ImageEnvironment(self._root.path, self._config, self.function, config)

    def close(self) -> None:
        self._root.close()


class ImageEnvironment:
    """One execution environment: a Runtime API and the image's entry point in nspawn."""

    def __init__(self, root: Path, image: ImageConfig, function: FunctionSpec,
                 config: WorkerConfig) -> None:
        self.root = root
        self.function = function
        self.config = config
        self.invocations = 0
        self.api = RuntimeAPI().start()
        self.machine = f"lambda-{uuid.uuid4().hex[:12]}"
        self._request: InvocationRequest | None = None
        self._log = collections.deque[str](maxlen=_LOG_BUFFER)
        self._log_lock = threading.Lock()
        self._log_mark = 0  # characters written before the invocation in flight began
        self._log_count = 0
        self._started = time.monotonic()
        argv = image.argv(function.command or None)
        if function.entrypoint:
            argv = (*function.entrypoint, *(function.command or image.cmd))
        env = self._environment(image)
        workdir = function.working_directory or image.workdir
        command = ["systemd-nspawn", "--quiet", "--register=no", "--keep-unit", "--as-pid2",
                   "--pipe", "--read-only", f"--tmpfs=/tmp:mode=1777,size={TMP_SIZE}",
                   f"--machine={self.machine}", "--resolv-conf=off", "--timezone=off",
                   "--link-journal=no", f"--directory={root}", f"--chdir={workdir}",
                   *(f"--setenv={name}" for name in env), "--",
                   *_unprivileged(root, argv)]
        # Values reach nspawn through its own environment (--setenv=NAME inherits them), never
        # its command line, which every local user can read in /proc.
        self._proc = subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      start_new_session=True)
        self._reader = threading.Thread(target=self._read_output, daemon=True,
                                        name=f"{self.machine}-output")
        self._reader.start()
        self._report_on_exit = True

    @property
    def pid(self) -> int:
        return self._proc.pid

    # -- the Sandbox protocol ------------------------------------------------------------------
    def wait_ready(self, timeout_s: float) -> WorkerReady:
        """Init is over: ready, or failed (posted /init/error, or exited first). Only an init that
        never ends (past *timeout_s*) raises."""
        deadline = time.monotonic() + timeout_s
        while not self.api.wait_init(min(0.1, max(0.0, deadline - time.monotonic()))):
            if self._proc.poll() is not None:
                return self._ready(f"Runtime.ExitError: Runtime exited with error: "
                                   f"{describe_exit(self._exit_code())} before its init finished")
            if time.monotonic() >= deadline:
                raise WorkerStartError(f"{self.function.name}: environment {self.machine} not "
                                       f"initialised after {timeout_s:.0f} s")
        error = self.api.init_error
        return self._ready(error.message() if error is not None else None)

    def send(self, request: InvocationRequest) -> None:
        if self._proc.poll() is not None and self._init_failure is None:
            raise SandboxExited(f"Runtime exited with error: {describe_exit(self._exit_code())}")
        self._request = request
        self._sent_at = time.monotonic()
        with self._log_lock:
            self._log_mark = self._log_count
        self._platform_line(f"START RequestId: {request.request_id} Version: $LATEST")
        if self._init_failure is None:
            self.api.submit(Invocation(
                request_id=request.request_id, payload=request.payload,
                deadline_ms=deadline_ms(request.deadline),
                function_arn=self.config.function_arn,
                trace_id=f"Root=1-{int(time.time()):08x}-{uuid.uuid4().hex[:24]};Sampled=0",
                client_context=request.client_context))

    def poll_reply(self, timeout_s: float) -> WorkerReply | None:
        request = self._request
        assert request is not None, "poll_reply without send"
        if self._init_failure is not None:  # Lambda: the invocation fails, the sandbox goes
            message = f"RequestId: {request.request_id} Error: {self._init_failure}"
            return self._reply(request, error_payload("Runtime.InitError", message,
                                                      self._init_stack), True, discard=True,
                               error_type="Runtime.InitError")
        result = self.api.wait_result(request.request_id, timeout_s)
        if result is None:
            if self._proc.poll() is not None:
                self._platform_line(f"END RequestId: {request.request_id}")
                raise SandboxExited(f"Runtime exited with error: "
                                    f"{describe_exit(self._exit_code())}")
            return None
        return self._reply(request, result.payload, result.error)

    def rss_bytes(self) -> int:
        """Every process of the environment together (nspawn itself excluded: the platform's)."""
        return sum(process_rss(pid) for pid in descendants(self._proc.pid))

    def peak_rss_bytes(self) -> int:
        """The highest resident set (VmHWM) of any one process in the environment."""
        return max((_vm_hwm(pid) for pid in descendants(self._proc.pid)), default=0)

    def kill(self) -> None:
        for pid in reversed(descendants(self._proc.pid)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self._proc.pid, signal.SIGKILL)
        self.api.stop()

    def reap(self, timeout_s: float = 5.0) -> int | None:
        try:
            code = self._proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            return None
        self._reader.join(1.0)
        # nspawn leaves an empty mount-propagation directory per machine when it is killed
        with contextlib.suppress(OSError):
            (_PROPAGATE / self.machine).rmdir()
        return code

    # -- internals ---------------------------------------------------------------------------
    _init_failure: str | None = None
    _init_stack: list[str] | None = None
    _sent_at = 0.0

    _unreported_init_ms: float | None = None  #: for the first invocation's REPORT

    def _ready(self, init_error: str | None) -> WorkerReady:
        init_ms = (time.monotonic() - self._started) * 1000
        self._unreported_init_ms = init_ms
        if init_error is not None:
            self._init_failure = init_error
            error = self.api.init_error
            self._init_stack = error.stack() if error is not None else None
        self._platform_line(f"INIT_REPORT Init Duration: {init_ms:.2f} ms"
                            + ("\tStatus: error\tError Type: Runtime.InitError"
                               if init_error else ""))
        return WorkerReady(self.pid, init_ms, init_error)

    def _reply(self, request: InvocationRequest, payload: bytes, error: bool, *,
               discard: bool = False, error_type: str | None = None) -> WorkerReply:
        self._request = None
        elapsed_ms = (time.monotonic() - self._sent_at) * 1000
        self._platform_line(f"END RequestId: {request.request_id}")
        self._platform_line(report_line(
            request.request_id, duration_ms=elapsed_ms, memory_mb=self.function.memory_mb,
            max_memory_mb=self.peak_rss_bytes() // 2**20, init_ms=self._unreported_init_ms))
        self._unreported_init_ms = None
        tail = None
        if request.want_logs:
            with self._log_lock:
                text = "".join(self._log)[-(self._log_count - self._log_mark):] \
                    if self._log_count > self._log_mark else ""
            tail = text.encode()[-LOG_TAIL_BYTES:].decode(errors="replace")
        return WorkerReply(payload, error, tail, discard=discard, error_type=error_type)

    def _environment(self, image: ImageConfig) -> dict[str, str]:
        """The image's ENV, then Lambda's own variables, then the function's configuration."""
        c = self.config
        env = dict(image.env)
        env.update({
            "AWS_LAMBDA_RUNTIME_API": self.api.address,
            "AWS_LAMBDA_FUNCTION_NAME": c.function_name,
            "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(c.memory_mb),
            "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{c.function_name}",
            "AWS_LAMBDA_LOG_STREAM_NAME": c.log_stream_name,
            "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand",
            "AWS_REGION": c.region, "AWS_DEFAULT_REGION": c.region,
            "_HANDLER": " ".join(self.function.command) if self.function.command
            else " ".join(image.cmd),
            "LAMBDA_TASK_ROOT": env.get("LAMBDA_TASK_ROOT", "/var/task"),
            "LAMBDA_RUNTIME_DIR": "/var/runtime", "TZ": ":UTC",
        })
        env.update(c.environment)  # the function's variables, credentials included
        return env

    def _read_output(self) -> None:
        """The environment's stdout and stderr: to the endpoint's own log, and kept for Tail."""
        stream: IO[bytes] | None = self._proc.stdout
        assert stream is not None
        for raw in stream:
            self._keep(raw.decode(errors="replace"))
            sys.stderr.write(raw.decode(errors="replace"))
        sys.stderr.flush()

    def _platform_line(self, line: str) -> None:
        self._keep(line + "\n")
        sys.stderr.write(line + "\n")

    def _keep(self, text: str) -> None:
        with self._log_lock:
            self._log.extend(text)
            self._log_count += len(text)

    def _exit_code(self) -> int | None:
        """The runtime's exit status (nspawn passes its payload's on)."""
        return self._proc.poll()


def _unprivileged(root: Path, argv: tuple[str, ...]) -> tuple[str, ...]:
    """*argv* as Lambda's sandbox user, no capabilities (setpriv from the image's util-linux);
    an image without setpriv runs as its own USER would (root)."""
    for candidate in ("usr/bin/setpriv", "bin/setpriv"):
        if (root / candidate).exists():
            return (f"/{candidate}", f"--reuid={SANDBOX_UID}", f"--regid={SANDBOX_UID}",
                    "--clear-groups", "--inh-caps=-all", "--bounding-set=-all", "--", *argv)
    return argv


def descendants(pid: int) -> list[int]:
    """Every live descendant of *pid*, parents before children."""
    found: list[int] = []
    frontier = [pid]
    while frontier:
        parent = frontier.pop()
        try:
            tasks = os.listdir(f"/proc/{parent}/task")
        except OSError:
            continue
        for task in tasks:
            try:
                with open(f"/proc/{parent}/task/{task}/children") as handle:
                    children = [int(c) for c in handle.read().split()]
            except OSError:
                continue
            found.extend(children)
            frontier.extend(children)
    return found


def _vm_hwm(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0
