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
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self

#: Cached roots live here unless the caller says otherwise.
DEFAULT_CACHE_DIR = Path("/var/cache/openstack-handler/roots")
DEFAULT_MIRROR = "http://deb.debian.org/debian"
#: What a machine needs to boot, be reached over SSH and be configured by Ansible.
BASE_PACKAGES = ("systemd", "systemd-sysv", "dbus", "iproute2", "openssh-server", "sudo",
                 "python3", "python3-apt")


class ContainerError(RuntimeError):
    """A root could not be built, or a machine did not boot or answer."""


class BuildTimeout(ContainerError):
    """A root build ran past its deadline; the step that was running was killed."""


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


#: Receives one line per build phase (``print`` will do); builds are quiet without one.
Progress = Callable[[str], None]


def root_path(spec: RootSpec, cache_dir: Path = DEFAULT_CACHE_DIR) -> Path:
    """Where the root for *spec* is (or will be) cached; it is complete once it exists."""
    return cache_dir / spec.key


def cached_root(spec: RootSpec, cache_dir: Path = DEFAULT_CACHE_DIR, *,
                log_path: Path | None = None, progress: Progress | None = None,
                deadline: float | None = None) -> Path:
    """The root for *spec*, building it on first use (minutes), otherwise at once.

    Built under a temporary name and renamed when complete, with a lock held, so an interrupted or
    concurrent build never leaves a half-made root behind under the final name; the next build
    discards what an interrupted one left (:func:`discard_partial`) and starts over. *deadline*
    (``time.monotonic()``) bounds the build: past it, the running step is killed and
    :class:`BuildTimeout` raised.
    """
    cache_dir.mkdir(parents=True, exist_ok=True)
    final = root_path(spec, cache_dir)
    say = progress or (lambda line: None)
    with locked(cache_dir / f".{spec.key}.lock", say) as lock_fd:
        if final.is_dir():
            return final
        building = cache_dir / f".{spec.key}.building"
        discard_partial(building)
        with _log_sink(log_path) as log:
            say(f"debootstrap {spec.suite} ({len(spec.packages)} packages)")
            _run(["debootstrap", "--variant=minbase", f"--include={','.join(spec.packages)}",
                  spec.suite, str(building), spec.mirror], log, what="debootstrap",
                 deadline=deadline, lock_fd=lock_fd)
            for argv in spec.customize:
                say(" ".join(argv[:4]) + (" ..." if len(argv) > 4 else ""))
                # --keep-unit: without a system bus nspawn cannot register a scope of its own.
                _run(["systemd-nspawn", "--quiet", "--register=no", "--keep-unit", "--pipe",
                      "-D", str(building), "--", *argv], log, what=" ".join(argv[:3]),
                     deadline=deadline, lock_fd=lock_fd)
        (building / "etc/machine-id").write_text("")  # each boot of a copy gets its own id
        building.rename(final)
    return final


def discard_partial(path: Path) -> None:
    """Remove what an interrupted build left at *path*: first every process still working on it
    (a booted build machine outlives a killed builder: nspawn runs in its own session), then
    every mount below it (debootstrap mounts /proc and /sys in its target), then the files."""
    if not path.exists() and not path.is_symlink():
        return
    resolved = path.resolve()
    deadline = time.monotonic() + 30
    while (pids := _processes_working_on(resolved)) and time.monotonic() < deadline:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.2)
    for mount_point in sorted(_mounts_below(resolved), key=lambda p: len(p.parts), reverse=True):
        subprocess.run(["umount", "--lazy", str(mount_point)], check=False, capture_output=True)
    # --one-file-system: never follow a mount that could not be unmounted into the host.
    proc = subprocess.run(["rm", "-rf", "--one-file-system", str(path)], check=False,
                          capture_output=True, text=True)
    if path.exists():
        raise ContainerError(f"cannot remove the interrupted build at {path}: "
                             f"{proc.stderr.strip()[-500:]}")


def _processes_working_on(path: Path) -> list[int]:
    """Live processes whose root or working directory is inside *path*, or that name it in their
    arguments (``systemd-nspawn -D PATH``, ``debootstrap SUITE PATH``); never this process or its
    ancestors. Zombies are left to their parents."""
    spared = {0}
    pid = os.getpid()
    while pid not in spared:
        spared.add(pid)
        try:
            pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            break
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in spared:
            continue
        try:
            if entry.joinpath("stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                continue
            links = [Path(os.readlink(entry / name)) for name in ("root", "cwd")]
            args = entry.joinpath("cmdline").read_bytes().split(b"\0")
        except (OSError, IndexError):
            continue
        inside = any(link == path or path in link.parents for link in links)
        named = any(arg == bytes(path) or arg.startswith(bytes(path) + b"/") for arg in args)
        if inside or named:
            found.append(int(entry.name))
    return found


def _mounts_below(path: Path) -> list[Path]:
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        # field 5 is the mount point, with spaces and the like octal-escaped
        point = Path(line.split()[4].encode().decode("unicode_escape"))
        if point == path or path in point.parents:
            points.append(point)
    return points


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
        """A name of this process's and a subnet no interface on the host uses.

        Namespaces an earlier run left behind (named after a process that is gone) are deleted
        first; a subnet still held (an orphaned machine keeps its veth) is skipped."""
        for name in _namespaces():
            pid = name.removeprefix(prefix)
            if name.startswith(prefix) and pid.isdigit() and not Path(f"/proc/{pid}").exists():
                cls(name=name, subnet_octet=0).delete()
        pid = os.getpid()
        used = _subnet_octets_in_use()
        for step in range(250):
            octet = (pid + step) % 250 + 1
            if octet not in used:
                return cls(name=f"{prefix}{pid}", subnet_octet=octet)
        raise ContainerError("no free 10.231.N.0/30 subnet for a test network")

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


def _namespaces() -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], check=False, capture_output=True, text=True)
    return [line.split()[0] for line in out.stdout.splitlines() if line.strip()]


def _subnet_octets_in_use() -> set[int]:
    """N of every 10.231.N.x address on the host's interfaces."""
    out = subprocess.run(["ip", "-o", "-4", "addr", "show"], check=False, capture_output=True,
                         text=True).stdout
    return {int(word.split(".")[2]) for word in out.split()
            if word.startswith("10.231.") and word.count(".") == 3}


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
    def running(self) -> bool:
        """Whether systemd-nspawn still runs (it exits once the guest's PID 1 is gone)."""
        return self._proc is not None and self._proc.poll() is None

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

    def run_logged(self, argv: Sequence[str], *, log_path: Path,
                   on_line: Callable[[str], None] | None = None,
                   deadline: float | None = None) -> int:
        """Run *argv* inside the machine with its output (stdout and stderr) appended to
        *log_path* as it comes, each line also given to *on_line*; returns the exit status.
        Past *deadline* (``time.monotonic()``) it is stopped and :class:`BuildTimeout` raised."""
        proc = subprocess.Popen(["nsenter", "-t", str(self.init_pid), "-a", "--", *argv],
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, start_new_session=True)
        expired = threading.Event()

        def expire() -> None:
            expired.set()
            stop_process_group(proc)

        timer = None
        if deadline is not None:
            timer = threading.Timer(max(deadline - time.monotonic(), 0.0), expire)
            timer.daemon = True
            timer.start()
        assert proc.stdout is not None
        with log_path.open("ab") as log:
            for raw in proc.stdout:
                log.write(raw)
                log.flush()
                if on_line is not None:
                    on_line(raw.decode(errors="replace").rstrip("\n"))
        returncode = proc.wait()
        if timer is not None:
            timer.cancel()
            timer.join()
        if expired.is_set():
            raise BuildTimeout(f"{' '.join(argv[:2])} was still running when the build's time "
                               "budget ran out")
        return returncode

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
def locked(path: Path, say: Progress | None = None) -> Iterator[int]:
    """Hold an exclusive lock on *path* (waiting for it, said once); yields its descriptor."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if say is not None:
                say(f"waiting for {path.name}: another build of this root, or a step that an "
                    "interrupted build left running")
            fcntl.flock(handle, fcntl.LOCK_EX)
        yield handle.fileno()


@contextlib.contextmanager
def _log_sink(path: Path | None) -> Iterator[IO[bytes] | int]:
    if path is None:
        yield subprocess.DEVNULL
        return
    with path.open("ab") as handle:
        yield handle


def _run(argv: Sequence[str], log: IO[bytes] | int, *, what: str,
         deadline: float | None = None, lock_fd: int | None = None) -> None:
    """Run one build step in its own session; past *deadline*, SIGTERM its group (SIGKILL 10 s
    later) and raise :class:`BuildTimeout`.

    If the builder dies first (SIGKILL, OOM) the step is killed too (``PR_SET_PDEATHSIG``), and
    whatever it started keeps *lock_fd*, the build's lock, open: the next build waits for those
    to end before it discards the partial root, rather than racing them.
    """
    # setpriv (util-linux) sets the parent-death signal, then execs the step.
    proc = subprocess.Popen(["setpriv", "--pdeathsig", "KILL", "--", *argv], stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True,
                            pass_fds=() if lock_fd is None else (lock_fd,))
    timeout = None if deadline is None else max(deadline - time.monotonic(), 0.0)
    try:
        returncode = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        stop_process_group(proc)
        raise BuildTimeout(f"{what} was still running when the build's time budget ran out"
                           ) from None
    if returncode != 0:
        raise ContainerError(f"{what} failed with exit code {returncode}")


def stop_process_group(proc: subprocess.Popen[Any], *, grace_s: float = 10.0) -> None:
    """SIGTERM *proc*'s process group (it leads a session of its own), SIGKILL after *grace_s*."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
