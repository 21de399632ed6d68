"""Process helpers the benchmarks share: run the real daemon as a subprocess against a LocalCloud,
and read a process's CPU time, memory and loaded libraries from /proc."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from localcloud.cloud import LocalCloud
from openstack_handler.demos.daemon_config import write_daemon_config

REPO = Path(__file__).resolve().parents[1]
_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of *pid* (its threads included), from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS  # fields 14 and 15 of stat(5)


def memory_mb(pid: int) -> dict[str, float]:
    """Resident set now (VmRSS) and its peak (VmHWM), in MB."""
    values = {}
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            name, _, rest = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                values[name] = round(int(rest.split()[0]) / 1024, 1)
    return {"rss_mb": values.get("VmRSS", 0.0), "peak_rss_mb": values.get("VmHWM", 0.0)}


def maps_torch(pid: int) -> bool:
    """Whether any torch file is mapped into *pid* (an import of torch would map libtorch)."""
    with open(f"/proc/{pid}/maps") as handle:
        return any("/torch/" in line for line in handle)


@dataclass
class DaemonProc:
    """The running daemon and where it logs."""

    proc: subprocess.Popen[bytes]
    log_path: Path
    config: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_ready(self, timeout_s: float = 60.0, *, line: bytes = b"consumer.first_poll_ok") -> None:
        """Until its first receive returned (the line systemd's READY=1 follows), or *line*.

        With an empty queue the first receive returns only when its long poll ends."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"daemon exited {self.proc.returncode}: {self.tail()}")
            if line in self.log_path.read_bytes():
                return
            time.sleep(0.05)
        raise TimeoutError(f"daemon not ready after {timeout_s} s: {self.tail()}")

    def tail(self, chars: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]


@contextmanager
def run_daemon(cloud: LocalCloud, work: Path, *, concurrency: int, wait_time_s: int | None = 1,
               env_overrides: Mapping[str, str] | None = None,
               hard_stop: bool = False, replica: str = "",
               settings: Mapping[str, Any] | None = None) -> Iterator[DaemonProc]:
    """The real daemon (`python -m openstack_handler run`) on *cloud*; SIGTERM on exit.

    Daemons given the same *work* dir and distinct *replica* names are replicas on one machine
    (systemd's handler@N): one settings file, state DB and results dir, a log file each.

    *wait_time_s* shortens the long poll so that a graceful stop takes seconds (None: the
    default 20 s; long polling returns as soon as a message arrives either way). *hard_stop*
    sends the second SIGTERM at once (the daemon then exits without waiting out its polls).
    *settings* go into its settings file beside the cloud's (``targets``, say)."""
    work.mkdir(parents=True, exist_ok=True)
    config = write_daemon_config(cloud, work / "daemon.toml", work / "results", work / "state",
                                 concurrency=concurrency, extra=settings)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(cloud.client_env())
    env["PYTHONPATH"] = str(REPO)
    if wait_time_s is not None:
        env["OPENSTACK_HANDLER_WAIT_TIME_S"] = str(wait_time_s)
    if replica:
        env["OPENSTACK_HANDLER_REPLICA"] = replica
    env.update(env_overrides or {})
    log_path = work / (f"daemon-{replica}.log" if replica else "daemon.log")
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "openstack_handler", "run", "--config", str(config),
             "--log-format", "json"], env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            yield DaemonProc(proc, log_path, config)
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                if hard_stop:
                    time.sleep(0.2)
                    proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
