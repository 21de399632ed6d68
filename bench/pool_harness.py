"""Stand-ins for the pool's guests, which the container cloud's fake compute driver never runs
(the pool's tests and benchmark).

On a real cloud a pool server boots its image and starts the private function service and the
pool agent (``openstack-handler pool-agent``). Here, when a server of the pool goes ACTIVE in
Nova, :class:`GuestStandIn` starts those two for it on the host: a real private function service
process (the local cloud's function, its own port, SigV4 with the pool's key pair) and a real
:class:`~openstack_handler.private_cloud.pool_agent.PoolAgent` publishing into *that server's*
metadata through the cloud's API. When the server leaves Nova, both stop — and the stand-in
records whether the service still had work running at that moment (it must never have).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lambda_service.endpoint import LambdaEndpoint
from localcloud.cloud import LocalCloud
from openstack_handler.private_cloud.cloud_status import connect
from openstack_handler.private_cloud.pool import POOL_KEY, load_template
from openstack_handler.private_cloud.pool_agent import AgentSettings, PoolAgent

REPO = Path(__file__).resolve().parents[1]
POOL_KEY_ID, POOL_SECRET = "AKIDPOOLFUNCTIONS000", "the-pool-service-secret"


@dataclass
class Guest:
    server_id: str
    name: str
    service: LambdaEndpoint
    agent: PoolAgent
    thread: threading.Thread
    started_at: float
    #: the service's /health for the function when the server left (None: still there)
    final: dict[str, Any] | None = None


@dataclass
class GuestStandIn:
    cloud: LocalCloud
    cloud_name: str  #: the clouds.yaml entry the agents publish with
    pool_name: str
    slots: int
    work_dir: Path
    agent_interval_s: float = 1.0
    drain_quiet_s: float = 3.0
    guests: dict[str, Guest] = field(default_factory=dict)
    gone: list[Guest] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    #: held while a guest arrives or leaves, and while the guests are read
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def function(self) -> str:
        return self.cloud.resources.function_name

    def start(self) -> GuestStandIn:
        self._thread = threading.Thread(target=self._watch, name="guest-stand-in", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        with self._lock:
            staying = list(self.guests.values())
        for guest in staying:
            self._leave(guest)

    def runs(self) -> int:
        """Invocations the pool's services ran, the gone ones included."""
        return sum(self.runs_by_guest().values())

    def runs_by_guest(self) -> dict[str, int]:
        """Server id → invocations its service ran (the gone ones' at their removal)."""
        with self._lock:
            counts = {g.server_id: int((g.final or {}).get("invocations", 0)) for g in self.gone}
            for guest in self.guests.values():
                counts[guest.server_id] = int(
                    guest.service.health()["functions"][self.function].get("invocations", 0))
        return counts

    def _watch(self) -> None:
        conn = connect(self.cloud_name, api_timeout_s=30)
        while not self._stop.wait(0.5):
            try:
                servers = {s.id: s for s in conn.compute.servers(details=True)
                           if (s.metadata or {}).get(POOL_KEY) == self.pool_name}
            except Exception as exc:  # noqa: BLE001 - keep watching; the test sees the errors
                self.errors.append(f"listing servers: {exc}")
                conn = connect(self.cloud_name, api_timeout_s=30)
                continue
            for server_id, server in servers.items():
                if server.status == "ACTIVE" and server_id not in self.guests:
                    self._arrive(server_id, server.name)
            with self._lock:
                leaving = [g for i, g in self.guests.items() if i not in servers]
            for guest in leaving:
                self._leave(guest)

    def _arrive(self, server_id: str, name: str) -> None:
        service = self.cloud.private_service(concurrency=self.slots,
                                             log_path=self.work_dir / f"{name}.log",
                                             credentials={POOL_KEY_ID: POOL_SECRET})
        service.start()
        agent = PoolAgent(AgentSettings(cloud_name=self.cloud_name, server_id=server_id,
                                        endpoint_url=service.url, function_name=self.function,
                                        interval_s=self.agent_interval_s,
                                        drain_quiet_s=self.drain_quiet_s),
                          connect=lambda: connect(self.cloud_name, api_timeout_s=30))
        thread = threading.Thread(target=agent.run, name=f"agent-{name}", daemon=True)
        thread.start()
        with self._lock:
            self.guests[server_id] = Guest(server_id, name, service, agent, thread,
                                           time.monotonic())

    def _leave(self, guest: Guest) -> None:
        guest.agent.stop()
        guest.thread.join(timeout=10)
        with self._lock:
            try:
                guest.final = dict(guest.service.health()["functions"][self.function])
            except Exception as exc:  # noqa: BLE001
                self.errors.append(f"{guest.name}: health at removal: {exc}")
                guest.final = {}
            self.guests.pop(guest.server_id, None)
            self.gone.append(guest)
        guest.service.stop()


def wait_until(condition: Callable[[], bool], *, timeout_s: float, what: str,
               every_s: float = 0.5) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(every_s)
    raise AssertionError(f"not within {timeout_s:.0f} s: {what}")


# -- the processes around the pool: the controller, the daemon's settings, the stack -----------

def process_env(cloud: LocalCloud, clouds_yaml: str, work: Path) -> dict[str, str]:
    """A process's environment: the local cloud's AWS variables, the pool's key pair as the
    ``pool`` profile (a shared credentials file in *work*), the container cloud's clouds.yaml."""
    credentials = work / "aws-credentials"
    credentials.write_text(f"[pool]\naws_access_key_id = {POOL_KEY_ID}\n"
                           f"aws_secret_access_key = {POOL_SECRET}\n")
    credentials.chmod(0o600)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "OS_"))}
    return env | cloud.client_env() | {
        "PYTHONPATH": str(REPO), "AWS_SHARED_CREDENTIALS_FILE": str(credentials),
        "OS_CLIENT_CONFIG_FILE": clouds_yaml}


@contextmanager
def autoscaler(cloud: LocalCloud, *, clouds_yaml: str, settings: Mapping[str, Any],
               work: Path) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    """``openstack-handler autoscale`` as a process with *settings* (its TOML keys; the input
    queue and SQS endpoint are the cloud's); yields it and its log. SIGTERM on exit."""
    config = work / "autoscale.toml"
    values = {"input_queue_url": cloud.provisioned.input_queue_url,
              "endpoint_url": cloud.moto_url, "region": cloud.provisioned.region,
              "state_file": str(work / "autoscale-state.json"), **settings}
    config.write_text("".join(f"{key} = {json.dumps(value)}\n" for key, value in values.items()))
    log_path = work / "autoscale.log"
    with log_path.open("ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", "openstack_handler", "autoscale",
                                 "--config", str(config)],
                                env=process_env(cloud, clouds_yaml, work), stdout=log,
                                stderr=subprocess.STDOUT)
    try:
        yield proc, log_path
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def decisions(log_path: Path) -> list[dict[str, Any]]:
    """The controller's ``autoscale.decision`` lines so far."""
    lines = []
    for line in log_path.read_text().splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and entry.get("event") == "autoscale.decision":
            lines.append(entry)
    return lines


def daemon_pool_settings(*, stack_name: str, cloud_name: str, aws_url: str, slots: int,
                         aws_slots: int, max_servers: int,
                         burst_after_s: float = 1.0) -> dict[str, Any]:
    """The daemon's settings for the targets ``private`` (the pool) then ``aws``."""
    return {"cloud_name": cloud_name, "pool_refresh_s": 1.0, "pool_stale_after_s": 5.0,
            "burst_after_s": burst_after_s,
            "targets": [{"name": "private", "pool": stack_name, "slots": slots,
                         "max_servers": max_servers, "profile": "pool", "price_per_gb_s": 0.0,
                         "price_per_request": 0.0},
                        {"name": "aws", "endpoint_url": aws_url, "slots": aws_slots}]}


@contextmanager
def pool_stack(conn: Any, *, image_id: str, count: int = 0) -> Iterator[str]:
    """A pool stack from the repo's template (a fresh name), deleted on exit; yields its name."""
    name = f"pool-{uuid.uuid4().hex[:8]}"  # one per use: a deleted stack's name lingers
    stack = conn.orchestration.create_stack(
        name=name, template=load_template(),
        parameters={"pool_name": name, "count": count, "image": image_id, "flavor": "m1.tiny"})
    try:
        conn.orchestration.wait_for_status(stack, status="CREATE_COMPLETE",
                                           failures=["CREATE_FAILED"], interval=1, wait=120)
        yield name
    finally:
        conn.orchestration.delete_stack(stack)
        conn.orchestration.wait_for_delete(stack, interval=1, wait=180)
