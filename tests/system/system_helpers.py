"""The system tier's tools: a booted Debian VM stand-in, Ansible against it, systemd's view."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from localcloud.container import BASE_PACKAGES, Machine, RootSpec

REPO = Path(__file__).resolve().parents[2]
ANSIBLE_DIR = REPO / "ansible"
#: The VM image: Debian's minimal base plus what the handler role expects a cloud image to have.
VM_ROOT = RootSpec(name="handler-vm", packages=(*BASE_PACKAGES, "python3-venv"))
UNIT = "handler"
_RECAP = re.compile(r"^(?P<host>\S+)\s*:\s*ok=(?P<ok>\d+)\s+changed=(?P<changed>\d+)\s+"
                    r"unreachable=(?P<unreachable>\d+)\s+failed=(?P<failed>\d+)", re.MULTILINE)


@dataclass(frozen=True)
class PlayResult:
    returncode: int
    output: str

    def recap(self, host: str) -> dict[str, int]:
        """The PLAY RECAP counters of *host* (ok, changed, unreachable, failed)."""
        for match in _RECAP.finditer(self.output):
            if match["host"] == host:
                return {k: int(v) for k, v in match.groupdict().items() if k != "host"}
        raise AssertionError(f"no recap for {host} in:\n{self.output[-3000:]}")


def ansible_env() -> dict[str, str]:
    """The venv's tools first on PATH (ansible-playbook, its python), the project's ansible.cfg."""
    venv_bin = str(Path(sys.executable).parent)
    return {**os.environ, "PATH": f"{venv_bin}:{os.environ.get('PATH', '')}",
            "ANSIBLE_CONFIG": str(ANSIBLE_DIR / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_FORCE_COLOR": "0", "ANSIBLE_HOST_KEY_CHECKING": "False"}


def run_playbook(inventory: Path, extra_vars: Path, *args: str, timeout_s: float = 600,
                 log_path: Path | None = None) -> PlayResult:
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "ansible-playbook"), "-i", str(inventory),
         "-e", f"@{extra_vars}", *args, str(ANSIBLE_DIR / "site.yml")],
        cwd=ANSIBLE_DIR, env=ansible_env(), capture_output=True, text=True, timeout=timeout_s,
        check=False)
    output = proc.stdout + proc.stderr
    if log_path is not None:
        with log_path.open("a", encoding="utf-8") as log:
            log.write(output)
    return PlayResult(proc.returncode, output)


def unit_properties(vm: Machine, *names: str) -> dict[str, str]:
    out = vm.run(["systemctl", "show", UNIT, *(f"--property={n}" for n in names)]).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def journal_json_lines(vm: Machine) -> list[dict[str, Any]]:
    """The daemon's log lines that journald kept, parsed (non-JSON lines are skipped)."""
    out = vm.run(["journalctl", "--unit", UNIT, "--output", "cat", "--no-pager"]).stdout
    lines = []
    for line in out.splitlines():
        if line.startswith("{"):
            try:
                lines.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return lines
