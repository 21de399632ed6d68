"""Debian machines booted with systemd-nspawn: the local stand-in for a VM (and a cloud host).

A root file system is built once with debootstrap and cached, keyed by what went into it; every use
boots a throw-away copy of it, as PID 1 a real systemd, inside its own network namespace joined to
the host by a veth pair. The host side is reachable from the guest (e.g. a local cloud bound to
``network.host_ip``) and the guest's sshd from the host, which is all Ansible needs.

Needs root, ``debootstrap`` and ``systemd-container`` (the Makefile installs both).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Self

#: Cached roots live here unless the caller says otherwise.
DEFAULT_CACHE_DIR = Path("/var/cache/openstack-handler/roots")
DEFAULT_MIRROR = "http://deb.debian.org/debian"
#: What a machine needs to boot, be reached over SSH and be configured by Ansible.
BASE_PACKAGES = ("systemd", "systemd-sysv", "dbus", "iproute2", "openssh-server", "sudo",
                 "python3", "python3-apt")


class ContainerError(RuntimeError):
    """A root could not be built, or a machine did not boot or answer."""


@dataclass(frozen=True, kw_only=True)
class RootSpec:
    """What goes into a cached root: debootstrap's package set, then commands run inside it."""

    name: str
    suite: str = "bookworm"
    mirror: str = DEFAULT_MIRROR
    packages: tuple[str, ...] = BASE_PACKAGES
    #: argv lists run in the new root (``systemd-nspawn --pipe``, not booted) after debootstrap,
    #: e.g. ``("apt-get", "install", "-y", ...)``.
    customize: tuple[tuple[str, ...], ...] = ()

    @property
    def key(self) -> str:
        """Changes whenever anything that shapes the root changes."""
        blob = json.dumps([self.suite, self.mirror, sorted(self.packages),
                           [list(c) for c in self.customize]])
        return f"{self.name}-{hashlib.sha256(blob.encode()).hexdigest()[:12]}"


def cached_root(spec: RootSpec, cache_dir: Path = DEFAULT_CACHE_DIR, *,
                log_path: Path | None = None) -> Path:
    """The root for *spec*, building it on first use (minutes), otherwise at once.

    Built under a temporary name and renamed when complete, with a lock held, so an interrupted or
    concurrent build never leaves a half-made root behind under the final name.
    """
    cache_dir.mkdir(parents=True, exist_ok=True)
    final = cache_dir / spec.key
    with _locked(cache_dir / f".{spec.key}.lock"):
        if final.is_dir():
            return final
        building = cache_dir / f".{spec.key}.building"
        shutil.rmtree(building, ignore_errors=True)
        with _log_sink(log_path) as log:
            _run(["debootstrap", "--variant=minbase", f"--include={','.join(spec.packages)}",
                  spec.suite, str(building), spec.mirror], log, what="debootstrap")
            for argv in spec.customize:
                # --keep-unit: without a system bus nspawn cannot register a scope of its own.
                _run(["systemd-nspawn", "--quiet", "--register=no", "--keep-unit", "--pipe",
                      "-D", str(building), "--", *argv], log, what=" ".join(argv[:3]))
        (building / "etc/machine-id").write_text("")  # each boot of a copy gets its own id
        building.rename(final)
    return final


def clone_root(root: Path, dest: Path) -> Path:
    """A private copy of a cached root, for one machine's life (``cp -a``, reflinked if it can)."""
    if dest.exists():
        raise ContainerError(f"{dest} exists")
    dest.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["cp", "-a", "--reflink=auto", str(root), str(dest)], check=True)
    return dest


@dataclass
class Network:
    """A network namespace with a /30 veth link to the host: host_ip ↔ guest_ip."""

    name: str
    subnet_octet: int
    host_if: str = field(init=False)
    guest_if: str = field(init=False)

    def __post_init__(self) -> None:
        self.host_if = f"{self.name[:9]}-h"
        self.guest_if = f"{self.name[:9]}-g"

    @property
    def host_ip(self) -> str:
        return f"10.231.{self.subnet_octet}.1"

    @property
    def guest_ip(self) -> str:
        return f"10.231.{self.subnet_octet}.2"

    @property
    def path(self) -> Path:
        return Path("/run/netns") / self.name

    @classmethod
    def for_this_process(cls, prefix: str = "oh") -> Network:
        """A name and subnet unlikely to collide with another run on this machine."""
        pid = os.getpid()
        return cls(name=f"{prefix}{pid}", subnet_octet=pid % 250 + 1)

    def create(self) -> Self:
        self.delete()
        ns = ["ip", "netns", "exec", self.name, "ip"]
        for argv in (["ip", "netns", "add", self.name],
                     ["ip", "link", "add", self.host_if, "type", "veth", "peer", "name",
                      self.guest_if],
                     ["ip", "link", "set", self.guest_if, "netns", self.name],
                     ["ip", "addr", "add", f"{self.host_ip}/30", "dev", self.host_if],
                     ["ip", "link", "set", self.host_if, "up"],
                     [*ns, "addr", "add", f"{self.guest_ip}/30", "dev", self.guest_if],
                     [*ns, "link", "set", self.guest_if, "up"],
                     [*ns, "link", "set", "lo", "up"]):
            subprocess.run(argv, check=True, capture_output=True)
        return self

    def delete(self) -> None:
        subprocess.run(["ip", "link", "del", self.host_if], check=False, capture_output=True)
        subprocess.run(["ip", "netns", "del", self.name], check=False, capture_output=True)


class Machine:
    """A booted copy of a root: ``with Machine(root, network) as m: m.run(["systemctl", ...])``."""

    def __init__(self, root: Path, network: Network, *, log_path: Path,
                 hostname: str = "handler-vm") -> None:
        self.root = root
        self.network = network
        self.log_path = log_path
        self.hostname = hostname
        self._proc: subprocess.Popen[bytes] | None = None

    def boot(self, *, timeout_s: float = 90.0) -> Self:
        (self.root / "etc/hostname").write_text(self.hostname + "\n")
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                ["systemd-nspawn", "--register=no", "--keep-unit", "--boot", "--quiet",
                 "-D", str(self.root), f"--machine={self.hostname}",
                 f"--network-namespace-path={self.network.path}"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True)
        deadline = time.monotonic() + timeout_s
        state = ""
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise ContainerError(f"systemd-nspawn exited {self._proc.returncode}; "
                                     f"see {self.log_path}")
            with contextlib.suppress(ContainerError, subprocess.TimeoutExpired):
                state = self.run(["systemctl", "is-system-running"], check=False,
                                 timeout=10).stdout.strip()
                if state in ("running", "degraded"):
                    return self
            time.sleep(0.5)
        # `with Machine(...)` never reaches __exit__ when boot fails: power off here.
        self.shutdown()
        raise ContainerError(f"machine not up after {timeout_s:.0f} s (state {state!r})")

    @property
    def nspawn_pid(self) -> int:
        """systemd-nspawn's pid, also its session and process group: SIGTERM to it powers the
        machine off, so another process (a later ``down``) can stop a machine left running."""
        if self._proc is None:
            raise ContainerError("machine not booted")
        return self._proc.pid

    @property
    def init_pid(self) -> int:
        """The guest's PID 1 as the host sees it (systemd-nspawn's only child)."""
        if self._proc is None:
            raise ContainerError("machine not booted")
        children = Path(f"/proc/{self._proc.pid}/task/{self._proc.pid}/children")
        pids = children.read_text().split() if children.exists() else []
        if not pids:
            raise ContainerError("machine has no init process yet")
        return int(pids[0])

    def run(self, argv: Sequence[str], *, check: bool = True, timeout: float = 60,
            input: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run *argv* inside the machine (all of its namespaces), as root."""
        proc = subprocess.run(["nsenter", "-t", str(self.init_pid), "-a", "--", *argv],
                              check=False, capture_output=True, text=True, timeout=timeout,
                              input=input)
        if check and proc.returncode != 0:
            raise ContainerError(f"{' '.join(argv)} exited {proc.returncode}: "
                                 f"{proc.stderr.strip() or proc.stdout.strip()}")
        return proc

    def host_path(self, guest_path: str) -> Path:
        """Where the running guest's *guest_path* is, seen from the host."""
        return Path(f"/proc/{self.init_pid}/root") / guest_path.lstrip("/")

    def authorize_ssh_key(self, public_key: str, user: str = "root") -> None:
        """Before boot: let *public_key* log in as *user* (root only; other users need a home)."""
        home = self.root / ("root" if user == "root" else f"home/{user}")
        ssh_dir = home / ".ssh"
        ssh_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        keys = ssh_dir / "authorized_keys"
        keys.write_text(public_key.strip() + "\n")
        keys.chmod(0o600)

    def shutdown(self, *, timeout_s: float = 30.0) -> None:
        """Power off (SIGTERM to nspawn asks systemd to), killing it if it takes too long."""
        if self._proc is None or self._proc.poll() is not None:
            return
        self._proc.send_signal(signal.SIGTERM)
        try:
            self._proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(self._proc.pid, signal.SIGKILL)
            self._proc.wait()

    def __enter__(self) -> Self:
        return self.boot()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.shutdown()


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


@contextlib.contextmanager
def _log_sink(path: Path | None) -> Iterator[IO[bytes] | int]:
    if path is None:
        yield subprocess.DEVNULL
        return
    with path.open("ab") as handle:
        yield handle


def _run(argv: Sequence[str], log: IO[bytes] | int, *, what: str) -> None:
    proc = subprocess.run(list(argv), check=False, stdout=log, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        raise ContainerError(f"{what} failed with exit code {proc.returncode}")
