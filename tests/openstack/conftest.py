"""Fixtures for the OpenStack side: small real HTTP servers (metadata service, a Keystone that
refuses), clouds.yaml files, the daemon's moto/fake-Lambda fixtures, and the real OpenStack
container (session-scoped, ``openstack`` marker)."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from openstack_handler import logs


@dataclass
class Canned:
    """What the canned server answers: status, body, an optional delay before answering."""

    status: int = 200
    body: bytes = b""
    delay_s: float = 0.0
    content_type: str = "application/json"


@dataclass
class CannedServer:
    """A real HTTP server on 127.0.0.1 answering each path with a :class:`Canned` reply."""

    routes: dict[tuple[str, str], Canned] = field(default_factory=dict)
    requests: list[tuple[str, str]] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def start(self) -> CannedServer:
        routes, requests = self.routes, self.requests

        class _Handler(BaseHTTPRequestHandler):
            def _answer(self, method: str) -> None:
                requests.append((method, self.path))
                if method == "POST":
                    self.rfile.read(int(self.headers.get("Content-Length", 0)))
                reply = routes.get((method, self.path), Canned(404, b'{"error": "not found"}'))
                if reply.delay_s:
                    threading.Event().wait(reply.delay_s)
                try:
                    self.send_response(reply.status)
                    self.send_header("Content-Type", reply.content_type)
                    self.send_header("Content-Length", str(len(reply.body)))
                    self.end_headers()
                    self.wfile.write(reply.body)
                except OSError:  # the client gave up (a timeout test)
                    pass

            def do_GET(self) -> None:
                self._answer("GET")

            def do_POST(self) -> None:
                self._answer("POST")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


@pytest.fixture()
def canned_server() -> Iterator[CannedServer]:
    server = CannedServer().start()
    yield server
    server.stop()


def closed_port() -> int:
    """A local port nobody listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


#: meta_data.json as Nova's metadata service serves it (Zed), trimmed of keys and files.
META_DATA = {
    "uuid": "5d2e3b0f-9a40-4bde-9f63-7f0a3c3e8c11", "name": "handler-vm-1",
    "hostname": "handler-vm-1.novalocal", "launch_index": 0, "availability_zone": "nova",
    "project_id": "0c8d4a2ab5f84c0db9b0f6d4c6ac9e5e", "devices": [], "meta": {},
    "random_seed": "c2VlZA==", "dedicated_cpus": [],
}


def write_clouds_yaml(path: Path, clouds: dict[str, dict[str, Any]]) -> Path:
    """A clouds.yaml (JSON is YAML) with *clouds*, mode 0600 like a real one."""
    path.write_text(json.dumps({"clouds": clouds}))
    path.chmod(0o600)
    return path


def app_credential_cloud(auth_url: str) -> dict[str, Any]:
    return {"auth_type": "v3applicationcredential", "region_name": "RegionOne",
            "identity_api_version": 3,
            "auth": {"auth_url": auth_url, "application_credential_id": "a" * 32,
                     "application_credential_secret": "not-a-real-secret"}}


@pytest.fixture()
def refusing_keystone(canned_server: CannedServer) -> CannedServer:
    """A Keystone that discovers fine and refuses every credential (401)."""
    version = {"id": "v3.14", "status": "stable", "updated": "2020-04-07T00:00:00Z",
               "links": [{"rel": "self", "href": canned_server.url + "/v3/"}],
               "media-types": [{"base": "application/json",
                                "type": "application/vnd.openstack.identity-v3+json"}]}
    canned_server.routes[("GET", "/v3")] = Canned(200, json.dumps({"version": version}).encode())
    canned_server.routes[("GET", "/v3/")] = canned_server.routes[("GET", "/v3")]
    canned_server.routes[("POST", "/v3/auth/tokens")] = Canned(401, json.dumps({"error": {
        "code": 401, "title": "Unauthorized",
        "message": "The request you have made requires authentication."}}).encode())
    return canned_server


@pytest.fixture()
def process_context() -> Iterator[dict[str, Any]]:
    """The log lines' process-wide context, emptied again after the test."""
    saved = dict(logs._process_context)
    yield logs._process_context
    logs._process_context.clear()
    logs._process_context.update(saved)


@pytest.fixture()
def clouds_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., Path]:
    """Factory: write a clouds.yaml and point OS_CLIENT_CONFIG_FILE at it."""

    def factory(clouds: dict[str, dict[str, Any]]) -> Path:
        path = write_clouds_yaml(tmp_path / "clouds.yaml", clouds)
        monkeypatch.setenv("OS_CLIENT_CONFIG_FILE", str(path))
        return path

    return factory


# -- the real OpenStack container (tests marked `openstack`) ----------------------------------

@pytest.fixture(scope="session")
def openstack_cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """Debian's OpenStack booted once per session from the root `make roots` built (about a
    minute to ready). Missing prerequisites, the root included, fail; they do not skip. A cloud
    an earlier, killed session left up is powered off by ``up`` (this session owns its cloud)."""
    import os
    import shutil

    from localcloud.machines import openstack

    assert os.geteuid() == 0, "the OpenStack container needs root"
    for tool in ("debootstrap", "systemd-nspawn", "nsenter", "ip", "mount"):
        assert shutil.which(tool), f"{tool} not found (apt-get install debootstrap systemd-container)"
    clouds_yaml = tmp_path_factory.mktemp("openstack") / "clouds.yaml"
    info = openstack.up(clouds_yaml, cloud_name="handler-test", build=False,
                        owner_pid=os.getpid())
    try:
        yield info
    finally:
        openstack.down()


def admin_connection(openstack_cloud: Any) -> Any:
    """The container's admin (what a tenant may not do: reset a server's state, set quotas,
    read user data), from the credentials bake.sh left in the guest."""
    from localcloud.machines.openstack import _connect

    text = (Path(openstack_cloud.overlay) / "root/openstack/admin-openrc").read_text()
    values = dict(line.removeprefix("export ").split("=", 1)
                  for line in text.splitlines() if line.startswith("export "))
    return _connect({"auth_url": values["OS_AUTH_URL"], "username": values["OS_USERNAME"],
                     "password": values["OS_PASSWORD"], "project_name": values["OS_PROJECT_NAME"],
                     "user_domain_name": "Default", "project_domain_name": "Default"})


def heat_connection(openstack_cloud: Any) -> Any:
    """The pool controller's login (Heat needs a password login, not an application
    credential: localcloud.machines.openstack._orchestration_password)."""
    import openstack.connection
    from openstack.config.loader import OpenStackConfig

    region = OpenStackConfig(config_files=[openstack_cloud.clouds_yaml]).get_one(
        cloud=openstack_cloud.heat_cloud_name, api_timeout=60)  # a hung API fails, not hangs
    return openstack.connection.Connection(config=region)


@pytest.fixture()
def cloud_env(openstack_cloud: Any, monkeypatch: pytest.MonkeyPatch) -> str:
    """openstacksdk finds the container's clouds.yaml; returns the cloud's name."""
    monkeypatch.setenv("OS_CLIENT_CONFIG_FILE", openstack_cloud.clouds_yaml)
    for name in [n for n in os_environ_names() if n.startswith("OS_") and n != "OS_CLIENT_CONFIG_FILE"]:
        monkeypatch.delenv(name, raising=False)
    return openstack_cloud.cloud_name


def os_environ_names() -> list[str]:
    import os

    return list(os.environ)
