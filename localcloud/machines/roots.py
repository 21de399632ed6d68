"""The machine roots the tests boot, built as a step of their own before the tests (``make roots``).

A test's timeout must not contain a root build: the first build takes minutes (the OpenStack
layers about a quarter of an hour) and, inside pytest, its progress is captured and invisible. So
``make test`` runs this first, one phase per root, each with a time budget of its own and a
progress line per step; the fixtures then only boot cached roots, and fail at once, naming this
command, when one is missing. Every root is cached under a key hashed from its inputs
(:class:`~localcloud.machines.nspawn.RootSpec`, the bake files), so a changed input builds anew and
an unchanged one costs nothing. A build that was interrupted (killed, timed out, power cut) is
discarded by the next one, which starts that root over; finished layers are kept.

    python -m localcloud.machines.roots build [--only NAME ...]   # what is missing, with progress
    python -m localcloud.machines.roots status                    # JSON: each root, built or not
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from localcloud.machines import openstack
from localcloud.machines.build_log import stamped, tail
from localcloud.machines.nspawn import (
    BASE_PACKAGES,
    DEFAULT_CACHE_DIR,
    ContainerError,
    RootSpec,
    cached_root,
    root_path,
)

#: The handler VM's image: Debian's minimal base plus what the handler role expects a cloud
#: image to have (a venv-capable Python).
HANDLER_VM = RootSpec(name="handler-vm", packages=(*BASE_PACKAGES, "python3-venv"))


@dataclass(frozen=True)
class Phase:
    """One root to build: where it is cached, how to build it, and the time it may take."""

    name: str
    path: Callable[[Path], Path]
    build: Callable[..., Path]
    #: generous: about 3x what a fresh machine here took, so only a hung step reaches it.
    budget_s: float


def phases() -> tuple[Phase, ...]:
    """In build order (the bake boots the packages layer)."""

    def vm_root(cache_dir: Path, **kwargs: object) -> Path:
        return cached_root(HANDLER_VM, cache_dir, **kwargs)

    def openstack_packages(cache_dir: Path, **kwargs: object) -> Path:
        return cached_root(openstack.PACKAGES_SPEC, cache_dir, **kwargs)

    return (
        Phase("handler-vm", lambda d: root_path(HANDLER_VM, d), vm_root, budget_s=15 * 60),
        Phase("openstack-packages", lambda d: root_path(openstack.PACKAGES_SPEC, d),
              openstack_packages, budget_s=25 * 60),
        Phase("openstack-baked", openstack.baked_root_path, openstack.baked_root,
              budget_s=30 * 60),
    )


def build(cache_dir: Path = DEFAULT_CACHE_DIR, *, only: Sequence[str] = (),
          say: Callable[[str], None] = print) -> dict[str, float]:
    """Build every missing root (or those named in *only*); returns seconds spent per phase."""
    logs = cache_dir.parent / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    spent: dict[str, float] = {}
    began = time.monotonic()
    for phase in phases():
        if only and phase.name not in only:
            continue
        final = phase.path(cache_dir)
        if final.is_dir():
            say(f"roots: {phase.name}: cached ({final})")
            spent[phase.name] = 0.0
            continue
        log_path = logs / f"{final.name}.log"
        say(f"roots: {phase.name}: building {final.name} (budget {phase.budget_s / 60:.0f} min, "
            f"log {log_path})")
        started = time.monotonic()
        progress = stamped(say, f"roots: {phase.name}:", started)
        try:
            phase.build(cache_dir, log_path=log_path, progress=progress,
                        deadline=started + phase.budget_s)
        except ContainerError as exc:
            raise ContainerError(f"{phase.name}: {exc}\n--- last lines of {log_path}:\n"
                                 f"{tail(log_path)}") from exc
        spent[phase.name] = round(time.monotonic() - started, 1)
        say(f"roots: {phase.name}: built in {spent[phase.name]:.0f} s")
    say(f"roots: ready in {time.monotonic() - began:.0f} s")
    return spent



def status(cache_dir: Path = DEFAULT_CACHE_DIR) -> dict[str, dict[str, object]]:
    return {phase.name: {"path": str(phase.path(cache_dir)),
                         "built": phase.path(cache_dir).is_dir()} for phase in phases()}



def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m localcloud.machines.roots",
        description="Build the Debian roots the system and OpenStack tests boot (root, "
                    "debootstrap, systemd-container; minutes the first time, cached after).")
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE_DIR,
                        help=f"where roots are cached (default {DEFAULT_CACHE_DIR})")
    sub = parser.add_subparsers(dest="command", required=True)
    make = sub.add_parser("build", help="build what is missing, a progress line per step")
    make.add_argument("--only", nargs="+", default=[], metavar="NAME",
                      choices=[p.name for p in phases()], help="just these roots")
    sub.add_parser("status", help="each root's path and whether it is built (JSON)")
    args = parser.parse_args(argv)
    if args.command == "status":
        print(json.dumps(status(args.cache_dir), indent=2))
        return 0
    from openstack_handler.logs import configure_logging

    configure_logging(None, level="warning", stream=sys.stderr)
    try:
        build(args.cache_dir, only=args.only,
              say=lambda line: print(line, flush=True))
    except ContainerError as exc:
        print(f"roots: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
