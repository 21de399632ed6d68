"""The local Lambda endpoint: `python -m lambda_service.endpoint --spec FILE --port N`, and
`LambdaEndpoint`, which runs that as a managed subprocess (like MotoServer does for moto).

boto3 reaches it through `AWS_ENDPOINT_URL_LAMBDA=<url>`; nothing in the caller knows it is local.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any, Self

import structlog

from lambda_service import systemd
from lambda_service.api import FAULTS_PATH, HEALTH_PATH, LambdaHTTPServer
from lambda_service.control import ControlPlane
from lambda_service.faults import FaultSpec
from lambda_service.net import free_port
from lambda_service.service import LambdaService
from lambda_service.spec import EndpointSpec

log = structlog.get_logger()

EXIT_OK = 0
EXIT_BAD_SPEC = 2


def configure_logging() -> None:
    """JSON lines on stderr (the manager sends them to its log file)."""
    structlog.configure(
        processors=[structlog.processors.add_log_level,
                    structlog.processors.TimeStamper(fmt="iso", utc=True),
                    structlog.processors.format_exc_info,
                    structlog.processors.JSONRenderer()],
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )


def serve(spec: EndpointSpec, host: str, port: int, *, init_timeout_s: float = 120.0,
          stop: threading.Event | None = None, faults: FaultSpec | None = None) -> None:
    """Start the pools and the HTTP server; return after *stop* is set (signals set it).
    *faults* (the ``LOCALCLOUD_FAULTS`` override) replaces every function's own fault spec."""
    stop = stop or threading.Event()
    service = LambdaService(spec, init_timeout_s=init_timeout_s, faults_override=faults,
                            sqs=lambda: _sqs_client(spec))
    control = ControlPlane(service, sqs=lambda: _sqs_client(spec), host=host,
                           credentials=spec.credentials, poll_wait_s=spec.event_source_poll_wait_s)
    server = LambdaHTTPServer((host, port), service, control)
    service.start()
    restored = control.functions.restore()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2},
                              name="http", daemon=True)
    thread.start()
    log.info("lambda_endpoint_listening", host=host, port=port,
             functions=[f.name for f in spec.functions], restored=restored,
             faults=service.fault_specs(),
             authenticate=spec.authenticate)
    systemd.keep_pinging(thread.is_alive, stop)
    try:
        if service.wait_warm(init_timeout_s):
            log.info("lambda_endpoint_warm")
        systemd.notify("READY=1\nSTATUS=serving " + (", ".join(service.pools) or "no functions"))
        stop.wait()
    finally:
        systemd.notify("STOPPING=1")
        log.info("lambda_endpoint_stopping")
        server.shutdown()
        server.server_close()
        control.stop()
        service.stop()


def _sqs_client(spec: EndpointSpec) -> Any:
    """The SQS client the event source pollers and the destinations of Event invocations use:
    the spec's endpoint and first credential
    (on AWS the poller would use the function's execution role), else boto3's own chain."""
    import boto3
    from botocore.config import Config

    kwargs: dict[str, Any] = {}
    if spec.credentials:
        access_key, secret = next(iter(spec.credentials.items()))
        kwargs.update(aws_access_key_id=access_key, aws_secret_access_key=secret)
    return boto3.session.Session(region_name=spec.region, **kwargs).client(
        "sqs", endpoint_url=spec.aws_endpoint_url,
        config=Config(retries={"mode": "standard", "max_attempts": 3},
                      max_pool_connections=64, read_timeout=30))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lambda_service.endpoint",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--spec", type=Path, required=True, help="JSON file listing the functions")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=3001)
    parser.add_argument("--init-timeout", type=float, default=120.0,
                        help="seconds a worker may take to import its handler")
    parser.add_argument("--credentials-file", type=Path,
                        help="JSON {access key: secret} added to the spec's credentials (a "
                             "systemd credential: the keys stay out of the spec file)")
    parser.add_argument("--state-dir", type=Path,
                        help="keep the functions made with CreateFunction here, and serve them "
                             "again after a restart (overrides the spec's state_dir)")
    args = parser.parse_args(argv)
    configure_logging()
    try:
        data = json.loads(args.spec.read_text(encoding="utf-8"))
        if args.credentials_file is not None:
            keys = json.loads(args.credentials_file.read_text(encoding="utf-8"))
            if not isinstance(keys, dict) or not all(
                    isinstance(k, str) and isinstance(v, str) for k, v in keys.items()):
                raise ValueError(f"{args.credentials_file}: expected a JSON object of access "
                                 "key → secret")
            data["credentials"] = {**(data.get("credentials") or {}), **keys}
        if args.state_dir is not None:
            data["state_dir"] = str(args.state_dir)
        spec = EndpointSpec.from_json(data)
        faults = FaultSpec.from_env(os.environ)
    except (OSError, ValueError) as exc:
        log.error("bad_spec", path=str(args.spec), error=str(exc))
        return EXIT_BAD_SPEC
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    serve(spec, args.host, args.port, init_timeout_s=args.init_timeout, stop=stop, faults=faults)
    return EXIT_OK


class LambdaEndpoint:
    """The endpoint in its own process (and process group, so its workers go down with it)."""

    def __init__(self, spec: EndpointSpec, *, host: str = "127.0.0.1", port: int | None = None,
                 log_path: Path | None = None, pythonpath: Sequence[Path] = (),
                 cwd: Path | None = None, env: Mapping[str, str] | None = None) -> None:
        self.spec = spec
        self.host = host
        self.port = port or free_port(host)
        self.log_path = log_path
        self.pythonpath = tuple(pythonpath)
        self.cwd = cwd
        self.env = env
        self._proc: subprocess.Popen[bytes] | None = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def start(self, *, timeout_s: float = 120.0) -> Self:
        """Start the process and wait until every worker has imported its handler."""
        self._tmp = tempfile.TemporaryDirectory(prefix="lambda-endpoint-")
        spec_path = self.spec.write(Path(self._tmp.name) / "spec.json")
        env = dict(os.environ if self.env is None else self.env)
        if self.pythonpath:
            paths = [str(p) for p in self.pythonpath]
            env["PYTHONPATH"] = os.pathsep.join(paths + [env.get("PYTHONPATH", "")]).rstrip(
                os.pathsep)
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "lambda_service.endpoint", "--spec", str(spec_path),
                 "--host", self.host, "--port", str(self.port),
                 "--init-timeout", str(timeout_s)],
                stdout=out, stderr=subprocess.STDOUT, cwd=self.cwd, env=env,
                start_new_session=True)
        finally:
            if out is not subprocess.DEVNULL:
                out.close()
        try:
            self._wait_ready(timeout_s)
        except (TimeoutError, RuntimeError):
            self.stop()
            raise
        return self

    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def health(self) -> dict[str, Any]:
        """The endpoint's /health document (pool sizes, pids, counters, init errors)."""
        try:
            with urllib.request.urlopen(self.url + HEALTH_PATH, timeout=5) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:  # 503 while warming still carries the document
            return json.loads(exc.read())

    def set_faults(self, faults: FaultSpec | Mapping[str, Any] | None,
                   function: str | None = None) -> dict[str, Any]:
        """Replace the running endpoint's fault spec (None: no faults) for *function* or all;
        returns every function's spec as the endpoint now has it."""
        spec = FaultSpec.from_json(faults if faults is not None else {})
        query = "?" + urllib.parse.urlencode({"function": function}) if function else ""
        request = urllib.request.Request(
            self.url + FAULTS_PATH + query, data=json.dumps(spec.to_json()).encode(),
            method="POST", headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    def _wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._proc is None or self._proc.poll() is not None:
                raise RuntimeError(f"lambda endpoint exited during start (see {self.log_path})")
            with contextlib.suppress(OSError, ValueError):
                if self.health()["status"] == "ready":
                    return
            time.sleep(0.05)
        raise TimeoutError(f"lambda endpoint at {self.url} not warm after {timeout_s} s")

    def stop(self) -> None:
        """SIGTERM (the endpoint stops its workers), then SIGKILL whatever is left in the group."""
        proc, self._proc = self._proc, None
        if proc is not None:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


if __name__ == "__main__":
    sys.exit(main())
