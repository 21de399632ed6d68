"""Root builds (``make roots``) survive interruption: a build that runs past its budget, or whose
builder is killed, never blocks the next one, which starts that root over and finishes it.

Real debootstrap into a private cache dir (about a minute), real machines booted by nspawn.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from localcloud.machines.nspawn import (
    BuildTimeout,
    Machine,
    Network,
    RootSpec,
    cached_root,
    clone_root,
    discard_partial,
    root_path,
)
from localcloud.machines.roots import HANDLER_VM

pytestmark = [pytest.mark.system, pytest.mark.timeout(900)]

#: the smallest root debootstrap makes (minbase; bash is in it already).
TINY = RootSpec(name="interrupt-test", packages=("bash",))


def processes_using(path: Path) -> list[str]:
    """`pid command` of every process whose root, cwd or command line is inside *path*."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            links = [os.readlink(entry / name) for name in ("root", "cwd")]
        except OSError:
            continue
        if str(path) in cmdline or any(link.startswith(str(path)) for link in links):
            found.append(f"{entry.name} {cmdline[:120]}")
    return found


def mounts_below(path: Path) -> list[str]:
    return [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()
            if line.split()[4].startswith(str(path))]


def wait_for(predicate, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def test_an_interrupted_build_never_blocks_the_next_one(tmp_path: Path) -> None:
    cache = tmp_path / "roots"
    building = cache / f".{TINY.key}.building"

    # GIVEN a build whose time budget ends while debootstrap runs
    # WHEN it reaches the deadline
    # THEN it stops debootstrap and says so, leaving only a partial root behind
    started = time.monotonic()
    with pytest.raises(BuildTimeout, match="debootstrap was still running"):
        cached_root(TINY, cache, deadline=time.monotonic() + 8)
    assert time.monotonic() - started < 30
    wait_for(lambda: processes_using(building) == [], 15, "the stopped step's processes to end")
    assert not root_path(TINY, cache).exists()

    # GIVEN a second build, in a process of its own, killed outright (SIGKILL) mid-debootstrap
    script = textwrap.dedent(f"""
        from pathlib import Path
        from localcloud.machines.nspawn import RootSpec, cached_root
        cached_root(RootSpec(name={TINY.name!r}, packages={TINY.packages!r}), Path({str(cache)!r}))
    """)
    builder = subprocess.Popen([sys.executable, "-c", script], cwd=Path(__file__).parents[2])
    wait_for(lambda: (building / "debootstrap").is_dir() or (building / "var").is_dir(), 60,
             "the killed build's debootstrap to start writing")
    time.sleep(5)
    builder.send_signal(signal.SIGKILL)
    builder.wait()
    # THEN debootstrap dies with its builder rather than writing on into the partial root
    wait_for(lambda: not any("debootstrap" in p for p in processes_using(building)), 30,
             "debootstrap to die with its builder")

    # WHEN the next build runs
    root = cached_root(TINY, cache)
    # THEN it discarded the partial root and finished a whole one under the final name
    assert root == root_path(TINY, cache)
    assert (root / "etc/os-release").read_text().count("bookworm") >= 1
    assert (root / "usr/bin/bash").is_file()
    assert not building.exists()
    assert mounts_below(cache) == [] and processes_using(cache) == []
    # AND a build of what is cached costs nothing
    again = time.monotonic()
    assert cached_root(TINY, cache) == root and time.monotonic() - again < 1


def test_a_partial_root_with_a_running_machine_and_mounts_is_discarded(tmp_path: Path) -> None:
    # GIVEN what a killed bake leaves: a partial root with a machine still booted in it (nspawn
    # runs in a session of its own, so it outlives its builder) and a file system mounted inside
    vm_root = root_path(HANDLER_VM)
    assert vm_root.is_dir(), f"the VM root is not built ({vm_root}): run `make roots` first"
    building = clone_root(vm_root, tmp_path / "cache" / ".left-behind.building")
    scratch = building / "mnt" / "scratch"
    scratch.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(scratch)], check=True)
    network = Network.for_this_process(prefix="ohd").create()
    machine = Machine(building, network, log_path=tmp_path / "console.log", hostname="orphan")
    try:
        machine.boot()
        nspawn_pid = machine.nspawn_pid
        assert processes_using(building) != [] and mounts_below(building) != []
        # WHEN the next build discards it
        discard_partial(building)
        # THEN the machine is gone, nothing stays mounted, and the files are removed
        assert processes_using(building) == []
        assert mounts_below(building) == []
        assert not building.exists()
        wait_for(lambda: not machine.running, 30,
                 f"nspawn {nspawn_pid} to exit once its machine was killed")
    finally:
        machine.shutdown(timeout_s=10)
        network.delete()
        if scratch.is_mount():
            subprocess.run(["umount", "--lazy", str(scratch)], check=False)


def test_roots_status_and_a_cached_build(capsys: pytest.CaptureFixture[str]) -> None:
    # GIVEN the roots `make roots` built before this run
    from localcloud.machines import roots

    # WHEN status is asked THEN every root the tests boot is there, under a key of its inputs
    assert roots.main(["status"]) == 0
    state = json.loads(capsys.readouterr().out)
    assert set(state) == {"handler-vm", "openstack-packages", "openstack-baked"}
    assert all(entry["built"] for entry in state.values()), state
    assert Path(state["handler-vm"]["path"]) == root_path(HANDLER_VM)
    # AND a build of cached roots says so per root and costs nothing
    started = time.monotonic()
    assert roots.main(["build"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(":")[1].strip() for line in lines[:3]] == list(state)
    assert all(": cached (" in line for line in lines[:3]) and time.monotonic() - started < 5
