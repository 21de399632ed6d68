"""Stand-ins for the pool's guests, which the container cloud's fake compute driver never runs.

On a real cloud a pool server boots its image and starts the private function service and the
pool agent (``openstack-handler pool-agent``). Here, when a server of the pool goes ACTIVE in
Nova, :class:`GuestStandIn` starts those two for it on the host: a real private function service
process (the local cloud's function, its own port, SigV4 with the pool's key pair) and a real
:class:`~openstack_handler.private_cloud.pool_agent.PoolAgent` publishing into *that server's*
metadata through the cloud's API. When the server leaves Nova, both stop — and the stand-in
records whether the service still had work running at that moment (it must never have).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lambda_service.endpoint import LambdaEndpoint
from localcloud.cloud import LocalCloud
from openstack_handler.private_cloud.cloud_status import connect
from openstack_handler.private_cloud.pool import POOL_KEY
from openstack_handler.private_cloud.pool_agent import AgentSettings, PoolAgent

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
        for guest in list(self.guests.values()):
            self._leave(guest)

    def runs(self) -> int:
        """Invocations the pool's services ran, the gone ones included."""
        total = sum(int((g.final or {}).get("invocations", 0)) for g in self.gone)
        for guest in list(self.guests.values()):
            total += int(guest.service.health()["functions"][self.function].get("invocations", 0))
        return total

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
            for server_id in [i for i in self.guests if i not in servers]:
                self._leave(self.guests[server_id])

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
        self.guests[server_id] = Guest(server_id, name, service, agent, thread, time.monotonic())

    def _leave(self, guest: Guest) -> None:
        guest.agent.stop()
        guest.thread.join(timeout=10)
        try:
            guest.final = dict(guest.service.health()["functions"][self.function])
        except Exception as exc:  # noqa: BLE001
            self.errors.append(f"{guest.name}: health at removal: {exc}")
            guest.final = {}
        guest.service.stop()
        self.guests.pop(guest.server_id, None)
        self.gone.append(guest)


def wait_until(condition: Callable[[], bool], *, timeout_s: float, what: str,
               every_s: float = 0.5) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(every_s)
    raise AssertionError(f"not within {timeout_s:.0f} s: {what}")
