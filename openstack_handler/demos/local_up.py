"""``openstack-handler local up``: the local cloud in the foreground, with the daemon's config
written for it and what to run next printed, until SIGINT/SIGTERM."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import IO, Any

from botocore.exceptions import ClientError

from localcloud.cloud import DEFAULT_HANDLER, LocalCloud
from localcloud.workdir import WorkDir
from openstack_handler.demos.daemon_config import write_daemon_config, write_web_config
from openstack_handler.provisioning.camera import ProvisionedCamera
from openstack_handler.provisioning.spec import ProvisioningError, ResourceSpec


@contextlib.contextmanager
def _stop_on_signals() -> Iterator[threading.Event]:
    """An event set by SIGINT/SIGTERM (the handler only sets it); previous handlers restored."""
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def camera_lines(camera: ProvisionedCamera) -> list[str]:
    """What `local up` prints about the camera path: where to send frames, where answers are."""
    auth = ("NONE: no signature, the cloud listens on 127.0.0.1 only" if camera.auth_type
            == "NONE" else "AWS_IAM: sign with SigV4 (python -m camera send --auth AWS_IAM)")
    send = (f"#   python -m camera send --url {camera.detect_url} --response-queue "
            f"{camera.response_queue_url} --video clip.mp4")
    return [f"# camera path (Function URLs, auth {auth}):",
            f"#   one stage  (frame_handler, the answer over HTTP):     {camera.frame_url}",
            f"#   two stages (detect_handler, the answer on the queue): {camera.detect_url}",
            f"#   response queue:                                       {camera.response_queue_url}",
            f"#   frames bucket (GET URL?bucket=&key=):                 {camera.frames_bucket}",
            send]


def start_web_tier(cloud: LocalCloud, daemon_config: Path, work_dir: Path,
                   stop: threading.Event, *, timeout_s: float = 60.0
                   ) -> tuple[subprocess.Popen[bytes], str | None]:
    """``openstack-handler web`` on the cloud's buckets and the daemon's config, on a free
    loopback port (its log in *work_dir*/web.log); returns the process and its URL (None: it
    did not start, or *stop* was set first)."""
    config = write_web_config(cloud, work_dir / "web.toml", daemon_config)
    log_path = work_dir / "web.log"
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "openstack_handler", "web", "--config", str(config)],
            stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **cloud.client_env()})
    deadline = time.monotonic() + timeout_s
    while not stop.wait(0.1) and process.poll() is None and time.monotonic() < deadline:
        for line in log_path.read_text(errors="replace").splitlines():
            if '"web.listening"' in line:
                with contextlib.suppress(ValueError, KeyError):
                    return process, str(json.loads(line)["url"])
    return process, None


def stop_process(process: subprocess.Popen[Any] | None, *, timeout_s: float = 40.0) -> None:
    """SIGTERM, then SIGKILL after *timeout_s*."""
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def run_local_up(config_out: Path | None, gallery: Path, students: Path, *,
                 results_dir: Path = Path("results"), state_dir: Path | None = None,
                 daemon_concurrency: int = 4, function_concurrency: int = 2,
                 handler: str = DEFAULT_HANDLER, resources: ResourceSpec | None = None,
                 work_dir: Path | None = None, keep_work_dir: bool = False,
                 camera: bool = True, camera_concurrency: int = 1,
                 camera_handler: str | None = None, out: IO[str] | None = None) -> int:
    """Run the local cloud in the foreground until SIGINT/SIGTERM; 0 on a clean stop, 1 if it
    could not start or a server died. Its scratch folder (logs, and the config and state unless
    placed elsewhere) goes with a clean stop unless *keep_work_dir*; a failure keeps it."""
    out = out or sys.stdout
    scratch = WorkDir("localcloud-", given=work_dir, keep=keep_work_dir)
    work_dir = scratch.path
    cloud = LocalCloud(gallery=gallery, students=students, resources=resources, handler=handler,
                       concurrency=function_concurrency, work_dir=work_dir, camera=camera,
                       camera_concurrency=camera_concurrency, camera_handler=camera_handler)
    code = 1
    web: subprocess.Popen[bytes] | None = None
    with _stop_on_signals() as stop:
        try:
            cloud.start()
        except (OSError, TimeoutError, RuntimeError, ValueError, ProvisioningError,
                ClientError) as exc:
            print(f"local cloud failed to start: {exc}", file=sys.stderr)
            scratch.finish(False)
            return 1
        try:
            config = write_daemon_config(cloud, config_out or work_dir / "daemon.toml",
                                               results_dir, state_dir or work_dir / "state",
                                               daemon_concurrency)
            kept = "kept" if (keep_work_dir or not scratch.owned) else "removed"
            print(f"# local cloud is up (logs in {work_dir}, {kept} when it stops); Ctrl-C "
                  "stops it.", file=out)
            print(f"# daemon config: {config} (it names the endpoints: the daemon needs no "
                  "exports)", file=out)
            print(f"#   openstack-handler run --config {config}", file=out)
            print("# for your own aws CLI or boto3 calls against this cloud:", file=out)
            for key, value in cloud.client_env().items():
                print(f"export {key}={value}", file=out)
            if cloud.resources.mode == "serverless":
                p = cloud.provisioned
                print(f"# serverless mode: an upload to {p.input_bucket} invokes "
                      f"{cloud.resources.function_name} (no daemon needed); CSVs in "
                      f"{p.output_bucket}, events that failed every attempt on "
                      f"{p.failure_queue_url}", file=out)
            if camera:
                for line in camera_lines(cloud.camera):
                    print(line, file=out)
                web, web_url = start_web_tier(cloud, config, work_dir, stop)
                if web_url is None and not stop.is_set():
                    print(f"the web tier did not start: see {work_dir / 'web.log'}",
                          file=sys.stderr)
                    return 1
                if web_url is not None:
                    print(f"web tier: {web_url}", file=out)
                    print("#   the course's contract: curl -F inputFile=@face.jpg "
                          f"{web_url} ; the page: open {web_url} in a browser", file=out)
            else:
                print("# web tier: not started (it recognises images with the camera path's "
                      "frame function: leave out --no-camera)", file=out)
            out.flush()
            while not stop.wait(1.0):
                if not cloud.is_running():
                    print("a local cloud server exited", file=sys.stderr)
                    return 1
                if web is not None and web.poll() is not None:
                    print(f"the web tier exited ({web.returncode}): see "
                          f"{work_dir / 'web.log'}", file=sys.stderr)
                    return 1
            print("# stopping the local cloud", file=out)
            code = 0
            return 0
        finally:
            stop_process(web)
            cloud.stop()
            scratch.finish(code == 0)
