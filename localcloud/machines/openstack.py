"""A real OpenStack on one machine: Debian's packages in a systemd-nspawn container.

Keystone (fernet tokens, MariaDB), Glance (file store), Placement, Nova API/conductor/scheduler
with a nova-compute on the fake driver (servers go ACTIVE without a hypervisor), Neutron's API
server (ML2 without agents: networks, subnets, routers, no data plane), Heat (API and engine)
and RabbitMQ — the real services, so openstacksdk and Ansible's openstack.cloud modules talk to
what they would talk to on a DevStack host. DevStack itself cannot be installed offline (it
clones from the internet).

Two cached layers (:mod:`localcloud.machines.nspawn`; ``make roots`` builds both before the
tests): the packages (debootstrap + apt, ~3 min, 1.9 GB), then that root booted once to run
``devstack/container/bake.sh`` (databases, service users, endpoints, cells, flavors, Heat's stack
domain, the ``handler`` project and user; ~5 min) and powered off. Every ``up`` boots an overlay
on the baked root in its own network namespace (the guest is always 10.231.251.2, which the baked
endpoints name), sets a fresh password for the ``handler`` user, creates an application credential
with a fresh secret, gives the pool controller's user ``handler-pool`` a fresh password (Heat
needs a password login), and writes both to the caller's ``clouds.yaml`` (mode 0600, entries
``NAME`` and ``NAME-heat``) — the only place the secrets go. ``down`` powers off, unmounts,
deletes the namespace and the overlay.

    python -m localcloud.machines.openstack up --clouds-yaml PATH [--cloud NAME]
    python -m localcloud.machines.openstack status
    python -m localcloud.machines.openstack down

Needs root, debootstrap, systemd-container and the ``openstack`` extra (openstacksdk) on the host.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import structlog
from tenacity import retry, retry_if_exception, stop_after_delay, wait_fixed

from localcloud.machines.nspawn import (
    BASE_PACKAGES,
    DEFAULT_CACHE_DIR,
    ContainerError,
    Machine,
    Network,
    Progress,
    RootSpec,
    cached_root,
    clone_root,
    discard_partial,
    locked,
)

log = structlog.get_logger(__name__)

REPO = Path(__file__).resolve().parents[2]
BAKE_DIR = REPO / "devstack" / "container"
#: the files bake.sh needs inside the guest (under /root/openstack-bake/).
BAKE_FILES = ("bake.sh", "nova-compute-fake.service")
HOSTNAME = "openstack"  # RabbitMQ's node name and the compute host: baked, so fixed
NETNS = "oh-openstack"
#: 10.231.251.0/30: outside Network.for_this_process's 1..250, so it never meets a test VM.
SUBNET_OCTET = 251
REGION = "RegionOne"
#: the pool controller's user in the tenant's project (Heat needs a password login; see
#: _orchestration_password)
ORCHESTRATION_USER = "handler-pool"
#: where a running cloud keeps its overlay (on disk: the databases grow) and its state file.
DEFAULT_WORK_DIR = Path("/var/lib/openstack-handler/openstack")
#: the OpenStack units Debian enables; off until bake.sh has configured them.
BAKED_SERVICES = ("keystone.service", "glance-api.service", "placement-api.service",
                  "nova-api.service", "nova-api-metadata.service", "nova-conductor.service",
                  "nova-scheduler.service", "neutron-api.service", "neutron-rpc-server.service",
                  "heat-api.service", "heat-engine.service")
SERVICE_PORTS = {"identity": 5000, "image": 9292, "placement": 8778, "compute": 8774,
                 "network": 9696, "orchestration": 8004}

#: Debian's OpenStack (Zed in bookworm). Debian's nova-compute package would pull in qemu/KVM;
#: the fake driver needs only python3-nova, so the compute service gets a unit of our own.
OPENSTACK_PACKAGES = (
    "mariadb-server", "python3-pymysql", "rabbitmq-server", "keystone", "glance-api",
    "placement-api", "nova-api", "nova-conductor", "nova-scheduler", "python3-nova",
    "neutron-server", "heat-api", "heat-engine", "python3-heatclient",
    "python3-openstackclient", "crudini",
)

# Package scripts must not start services in the (not booted) build container.
_NO_SERVICE_STARTS = ("printf '#!/bin/sh\\nexit 101\\n' > /usr/sbin/policy-rc.d && "
                      "chmod 755 /usr/sbin/policy-rc.d")

PACKAGES_SPEC = RootSpec(
    name="openstack-packages",
    packages=BASE_PACKAGES,
    customize=(
        ("sh", "-c", _NO_SERVICE_STARTS),
        ("env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "update", "-q"),
        ("env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "install", "-y", "-q",
         "--no-install-recommends", *OPENSTACK_PACKAGES),
        ("apt-get", "clean"),
        ("rm", "-f", "/usr/sbin/policy-rc.d"),
    ),
)


@dataclass(frozen=True)
class CloudInfo:
    """A running container cloud, as ``up`` leaves it (also its state file)."""

    guest_ip: str
    auth_url: str
    cloud_name: str
    clouds_yaml: str
    nspawn_pid: int
    overlay: str
    log_path: str
    project: str = "handler"
    user: str = "handler"
    #: the process that will ``down`` it (None: whoever runs ``down``, e.g. the CLI's user).
    owner_pid: int | None = None

    @property
    def heat_cloud_name(self) -> str:
        """The clouds.yaml entry that drives Heat (see :func:`_orchestration_password`)."""
        return f"{self.cloud_name}-heat"


def guest_network() -> Network:
    return Network(name=NETNS, subnet_octet=SUBNET_OCTET)


def baked_key() -> str:
    """Changes with the packages layer, the bake files or the guest address."""
    digest = hashlib.sha256(PACKAGES_SPEC.key.encode())
    digest.update(guest_network().guest_ip.encode())
    for name in BAKE_FILES:
        digest.update(name.encode() + b"\0" + (BAKE_DIR / name).read_bytes())
    return f"openstack-baked-{digest.hexdigest()[:12]}"


def baked_root_path(cache_dir: Path = DEFAULT_CACHE_DIR) -> Path:
    """Where the configured root is (or will be) cached; it is complete once it exists."""
    return cache_dir / baked_key()


def baked_root(cache_dir: Path = DEFAULT_CACHE_DIR, *, log_path: Path,
               progress: Progress | None = None, deadline: float | None = None) -> Path:
    """The configured root, baking it on first use (packages ~5 min, then ~7 min of bake).

    Built under a temporary name and renamed when complete, with a lock held, like
    :func:`localcloud.machines.nspawn.cached_root`: an interrupted bake (its machine included) is
    discarded by the next one, which starts again from the cached packages layer. The bake needs
    the guest address, so it cannot run while a container cloud is up. *deadline*
    (``time.monotonic()``) bounds it; *progress* gets a line per phase of bake.sh.
    """
    final = baked_root_path(cache_dir)
    if final.is_dir():
        return final
    packages = cached_root(PACKAGES_SPEC, cache_dir, log_path=log_path, progress=progress,
                           deadline=deadline)
    key = final.name
    say = progress or (lambda line: None)
    with locked(cache_dir / f".{key}.lock", say):
        if final.is_dir():
            return final
        _clear_stale_state(DEFAULT_WORK_DIR)
        if _read_state(DEFAULT_WORK_DIR) is not None:
            raise ContainerError("an OpenStack container is up: `down` it before a new bake")
        building = cache_dir / f".{key}.building"
        discard_partial(building)
        say("copying the packages layer")
        clone_root(packages, building)
        bake = building / "root" / "openstack-bake"
        bake.mkdir(parents=True)
        for name in BAKE_FILES:
            shutil.copy2(BAKE_DIR / name, bake / name)
        # Unconfigured, they would fail at boot and hold it in "starting" (nova-conductor waits
        # for a database); bake.sh enables them once configured.
        wants = building / "etc/systemd/system/multi-user.target.wants"
        for unit in BAKED_SERVICES:
            (wants / unit).unlink(missing_ok=True)
        network = guest_network().create()
        machine = Machine(building, network, log_path=log_path, hostname=HOSTNAME)
        started = time.monotonic()
        try:
            say("booting the build machine")
            machine.boot(timeout_s=180)

            def on_line(line: str) -> None:
                if line.startswith("bake-phase: "):
                    say(line.removeprefix("bake-phase: "))

            returncode = machine.run_logged(
                ["bash", "/root/openstack-bake/bake.sh", network.guest_ip], log_path=log_path,
                on_line=on_line, deadline=deadline)
            if returncode != 0:
                raise ContainerError(f"bake.sh exited {returncode} (log {log_path})")
        finally:
            machine.shutdown(timeout_s=60)
            network.delete()
        log.info("openstack.baked", root=str(final), bake_s=round(time.monotonic() - started))
        (building / "etc/machine-id").write_text("")
        building.rename(final)
    return final


# -- up / down / status -----------------------------------------------------------------------

def up(clouds_yaml: Path, *, cloud_name: str = "handler", cache_dir: Path = DEFAULT_CACHE_DIR,
       work_dir: Path = DEFAULT_WORK_DIR, timeout_s: float = 300.0, build: bool = True,
       owner_pid: int | None = None) -> CloudInfo:
    """Boot the cloud (building/baking its root the first time unless *build* is false), wait
    until every API answers and the fake compute is up, then write *clouds_yaml* with a fresh
    application credential.

    *owner_pid*: the process whose life bounds the cloud's (a test session). A cloud left up by
    an owner that is gone (killed before its ``down``) is powered off here instead of blocking
    every later ``up``; a cloud without an owner (the CLI's) is left alone.
    """
    work_dir.mkdir(parents=True, exist_ok=True)
    log_path = work_dir / "openstack.log"
    _clear_stale_state(work_dir)
    if (state := _read_state(work_dir)) is not None:
        raise ContainerError(f"already up (nspawn pid {state.nspawn_pid}); `down` first")
    if not build and not baked_root_path(cache_dir).is_dir():
        raise ContainerError(f"the OpenStack root is not built ({baked_root_path(cache_dir)}): "
                             "run `make roots` first (about 15 minutes the first time)")
    root = baked_root(cache_dir, log_path=log_path)
    started = time.monotonic()
    overlay = _mount_overlay(root, work_dir)
    network = guest_network().create()
    machine = Machine(overlay, network, log_path=log_path, hostname=HOSTNAME)
    try:
        machine.boot(timeout_s=timeout_s)
        info = CloudInfo(guest_ip=network.guest_ip,
                         auth_url=f"http://{network.guest_ip}:5000/v3", cloud_name=cloud_name,
                         clouds_yaml=str(clouds_yaml), nspawn_pid=machine.nspawn_pid,
                         overlay=str(overlay), log_path=str(log_path), owner_pid=owner_pid)
        _write_state(work_dir, info)
        admin = _admin_auth(machine)
        _wait_ready(info, admin, deadline=started + timeout_s)
        _write_clouds_yaml(clouds_yaml, info, *_application_credential(info, admin),
                           _orchestration_password(info, admin))
    except BaseException:
        down(work_dir=work_dir)
        raise
    log.info("openstack.up", ready_s=round(time.monotonic() - started, 1), auth_url=info.auth_url,
             clouds_yaml=str(clouds_yaml), cloud=cloud_name)
    return info


def down(*, work_dir: Path = DEFAULT_WORK_DIR, timeout_s: float = 60.0) -> bool:
    """Power the cloud off (SIGTERM to nspawn; SIGKILL after *timeout_s*), unmount and remove the
    overlay, delete the network namespace. Idempotent; returns whether something was running."""
    state = _read_state(work_dir)
    was_up = state is not None and _alive(state.nspawn_pid)
    if state is not None and _alive(state.nspawn_pid):
        os.kill(state.nspawn_pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while _alive(state.nspawn_pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        if _alive(state.nspawn_pid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(state.nspawn_pid, signal.SIGKILL)
            while _alive(state.nspawn_pid):
                time.sleep(0.1)
    guest_network().delete()
    merged = work_dir / "merged"
    if merged.is_mount():
        subprocess.run(["umount", "--lazy", str(merged)], check=False, capture_output=True)
    for name in ("merged", "upper", "work"):
        shutil.rmtree(work_dir / name, ignore_errors=True)
    (work_dir / "state.json").unlink(missing_ok=True)
    return was_up


def status(*, work_dir: Path = DEFAULT_WORK_DIR) -> dict[str, Any]:
    """Whether the cloud is up, and which APIs answer."""
    state = _read_state(work_dir)
    if state is None or not _alive(state.nspawn_pid):
        return {"up": False}
    apis = {name: _answers(f"http://{state.guest_ip}:{port}/") for name, port in
            SERVICE_PORTS.items()}
    return {"up": True, **asdict(state), "apis": apis}


# -- helpers ----------------------------------------------------------------------------------

def _mount_overlay(root: Path, work_dir: Path) -> Path:
    """A writable view of the cached *root* (an overlay: instant, unlike a 3 GB copy)."""
    merged, upper, work = work_dir / "merged", work_dir / "upper", work_dir / "work"
    if merged.is_mount():
        subprocess.run(["umount", str(merged)], check=True, capture_output=True)
    for path in (upper, work):
        shutil.rmtree(path, ignore_errors=True)
    for path in (merged, upper, work):
        path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o",
                    f"lowerdir={root},upperdir={upper},workdir={work}", str(merged)],
                   check=True, capture_output=True)
    return merged


def _admin_auth(machine: Machine) -> dict[str, str]:
    """The admin credentials bake.sh left in the guest (read through /proc, never logged)."""
    text = machine.host_path("/root/openstack/admin-openrc").read_text()
    values = dict(line.removeprefix("export ").split("=", 1)
                  for line in text.splitlines() if line.startswith("export "))
    return {"auth_url": values["OS_AUTH_URL"], "username": values["OS_USERNAME"],
            "password": values["OS_PASSWORD"], "project_name": values["OS_PROJECT_NAME"],
            "user_domain_name": "Default", "project_domain_name": "Default"}


def _connect(auth: dict[str, str]) -> Any:
    import openstack

    return openstack.connect(auth=auth, auth_type="password", region_name=REGION,
                             identity_api_version="3", api_timeout=30, load_yaml_config=False,
                             load_envvars=False)


def _answers(url: str) -> bool:
    try:
        urllib.request.urlopen(url, timeout=2)
    except urllib.error.HTTPError:
        return True  # it answered (e.g. 401 for an API root)
    except OSError:
        return False
    return True


def _wait_ready(info: CloudInfo, admin: dict[str, str], *, deadline: float) -> None:
    """Every API answers, Keystone issues tokens, and the fake compute service is up."""
    pending = dict(SERVICE_PORTS)
    while pending and time.monotonic() < deadline:
        pending = {n: p for n, p in pending.items()
                   if not _answers(f"http://{info.guest_ip}:{p}/")}
        if pending:
            time.sleep(0.5)
    if pending:
        raise ContainerError(f"APIs not answering: {', '.join(sorted(pending))}")
    from keystoneauth1.exceptions import ClientException
    from openstack.exceptions import SDKException

    problem = "no answer"
    while time.monotonic() < deadline:
        try:
            conn = _connect(admin)
            services = list(conn.compute.services(binary="nova-compute"))
            if not any(s.state == "up" and s.status == "enabled" for s in services):
                problem = "nova-compute not up yet"
            # Placement must know the fake compute's resources before a boot can schedule.
            elif not list(conn.placement.resource_providers()):
                problem = "no resource provider in placement yet"
            # A stack needs a heat-engine that reports in (the API alone accepts and waits).
            elif not _heat_engine_up(conn):
                problem = "heat-engine not up yet"
            else:
                return
        except (SDKException, ClientException) as exc:
            problem = f"{type(exc).__name__}: {exc}"[:300]
        time.sleep(1)
    raise ContainerError(f"cloud not ready: {problem}")


def _heat_engine_up(conn: Any) -> bool:
    """Whether a heat-engine reports in (Heat's services API, admin only; openstacksdk has no
    call for it)."""
    response = conn.orchestration.get("/services")
    return response.ok and any(e.get("status") == "up"
                               for e in response.json().get("services", []))


def _application_credential(info: CloudInfo, admin: dict[str, str]) -> tuple[str, str]:
    """A fresh password for the tenant user, then, as that user, an application credential with
    a fresh secret. Returns (id, secret); neither is logged."""
    conn = _connect(admin)
    user = conn.identity.find_user(info.user, ignore_missing=False)
    password = secrets.token_urlsafe(24)
    conn.identity.update_user(user, password=password)
    credential = _create_credential_as(user.id, {**admin, "username": info.user,
                                                 "password": password,
                                                 "project_name": info.project})
    return credential.id, credential.secret


def _is_unauthorized(exc: BaseException) -> bool:
    return getattr(exc, "status_code", None) == 401


@retry(retry=retry_if_exception(_is_unauthorized), stop=stop_after_delay(15),
       wait=wait_fixed(1), reraise=True)
def _create_credential_as(user_id: str, auth: dict[str, str]) -> Any:
    """The application credential, created as the user just given a new password.

    Keystone records a password change as a revocation event with whole-second precision and
    revokes every token issued up to that second, so a token taken in the same second as the
    change is refused (401). A new session a second later gets a token that stands.
    """
    tenant = _connect(auth)
    return tenant.identity.create_application_credential(
        user=user_id, name=f"openstack-handler-{int(time.time())}",
        secret=secrets.token_urlsafe(32), description="openstack-handler (container cloud)")


def _orchestration_password(info: CloudInfo, admin: dict[str, str]) -> str:
    """The pool controller's user (:data:`ORCHESTRATION_USER`, member and heat_stack_owner in
    the tenant's project), made if missing, with a fresh password; returned, never logged.

    Heat makes a Keystone trust for every stack so that it can act on the owner's behalf later,
    and Keystone refuses to manage trusts for a token from an application credential (any
    application credential, restricted or not). So what drives Heat logs in with a password:
    a user of its own, which keeps the daemon's application credential as narrow as it was.
    """
    conn = _connect(admin)
    project = conn.identity.find_project(info.project, ignore_missing=False)
    password = secrets.token_urlsafe(24)
    user = conn.identity.find_user(ORCHESTRATION_USER)
    if user is None:
        user = conn.identity.create_user(name=ORCHESTRATION_USER, domain_id="default",
                                         default_project_id=project.id, password=password,
                                         description="openstack-handler's pool controller")
    else:
        conn.identity.update_user(user, password=password)
    for role in ("member", "heat_stack_owner"):
        conn.identity.assign_project_role_to_user(
            project, user, conn.identity.find_role(role, ignore_missing=False))
    _log_in_as({**admin, "username": ORCHESTRATION_USER, "password": password,
                "project_name": info.project})
    return password


@retry(retry=retry_if_exception(_is_unauthorized), stop=stop_after_delay(15),
       wait=wait_fixed(1), reraise=True)
def _log_in_as(auth: dict[str, str]) -> None:
    """A first login after a password change (see :func:`_create_credential_as` for why it may
    take a second), so the password works by the time ``up`` returns."""
    _connect(auth).authorize()


def _write_clouds_yaml(path: Path, info: CloudInfo, credential_id: str, secret: str,
                       orchestration_password: str) -> None:
    """clouds.yaml (JSON is valid YAML), created 0600 and replaced atomically: the tenant's
    application credential as *cloud_name*, the pool controller's login as
    ``<cloud_name>-heat``."""
    common = {"region_name": REGION, "identity_api_version": 3, "interface": "public"}
    document = {"clouds": {
        info.cloud_name: {**common, "auth_type": "v3applicationcredential",
                          "auth": {"auth_url": info.auth_url,
                                   "application_credential_id": credential_id,
                                   "application_credential_secret": secret}},
        info.heat_cloud_name: {**common, "auth_type": "password",
                               "auth": {"auth_url": info.auth_url,
                                        "username": ORCHESTRATION_USER,
                                        "password": orchestration_password,
                                        "user_domain_name": "Default",
                                        "project_name": info.project,
                                        "project_domain_name": "Default"}}}}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(document, handle, indent=2)
        handle.write("\n")
    os.replace(tmp, path)


def _write_state(work_dir: Path, info: CloudInfo) -> None:
    (work_dir / "state.json").write_text(json.dumps(asdict(info), indent=2) + "\n")


def _clear_stale_state(work_dir: Path) -> None:
    """``down`` a cloud whose machine is gone, or whose owner is (see :func:`up`)."""
    state = _read_state(work_dir)
    if state is None:
        return
    orphaned = state.owner_pid is not None and not _alive(state.owner_pid)
    if orphaned or not _alive(state.nspawn_pid):
        log.info("openstack.stale_cleared", nspawn_pid=state.nspawn_pid,
                 owner_pid=state.owner_pid, machine_alive=_alive(state.nspawn_pid))
        down(work_dir=work_dir)


def _read_state(work_dir: Path) -> CloudInfo | None:
    try:
        return CloudInfo(**json.loads((work_dir / "state.json").read_text()))
    except (OSError, ValueError, TypeError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split(") ", 1)[-1].startswith("Z"))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="devstack/openstack-container",
                                     description="A real OpenStack (Debian's packages) in a "
                                                 "systemd-nspawn container.")
    parser.add_argument("--work-dir", type=Path, default=DEFAULT_WORK_DIR)
    sub = parser.add_subparsers(dest="command", required=True)
    start = sub.add_parser("up", help="boot (building the root the first time, ~15 min) and "
                                      "write clouds.yaml with a fresh application credential")
    start.add_argument("--clouds-yaml", type=Path, required=True,
                       help="where to write clouds.yaml (mode 0600; holds the secret)")
    start.add_argument("--cloud", default="handler", help="the cloud's name in it")
    start.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE_DIR)
    start.add_argument("--timeout", type=float, default=300.0, help="seconds to ready")
    sub.add_parser("down", help="power off and remove the container, its overlay and netns")
    sub.add_parser("status", help="is it up, and which APIs answer (JSON)")
    args = parser.parse_args(argv)
    from openstack_handler.logs import configure_logging

    configure_logging(None, level="info", stream=sys.stderr)
    try:
        if args.command == "up":
            info = up(args.clouds_yaml, cloud_name=args.cloud, cache_dir=args.cache_dir,
                      work_dir=args.work_dir, timeout_s=args.timeout)
            print(f"OpenStack is up: {info.auth_url} (cloud {info.cloud_name!r} in "
                  f"{info.clouds_yaml}); export OS_CLIENT_CONFIG_FILE={info.clouds_yaml} "
                  f"OS_CLOUD={info.cloud_name}")
        elif args.command == "down":
            print("stopped" if down(work_dir=args.work_dir) else "was not running")
        else:
            print(json.dumps(status(work_dir=args.work_dir), indent=2))
    except ContainerError as exc:
        print(f"openstack-container: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
