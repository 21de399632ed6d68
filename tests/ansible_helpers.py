"""Running the project's playbooks from tests: the venv's Ansible, the project's ansible.cfg, and
the PLAY RECAP read back as numbers."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ANSIBLE_DIR = REPO / "ansible"
VENV_BIN = Path(sys.executable).parent
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
    return {**os.environ, "PATH": f"{VENV_BIN}:{os.environ.get('PATH', '')}",
            "ANSIBLE_CONFIG": str(ANSIBLE_DIR / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_FORCE_COLOR": "0", "ANSIBLE_HOST_KEY_CHECKING": "False"}


def run_playbook(inventory: str | Path, extra_vars: Path, *args: str, timeout_s: float = 600,
                 log_path: Path | None = None, env: Mapping[str, str] | None = None
                 ) -> PlayResult:
    """``ansible-playbook -i INVENTORY -e @EXTRA_VARS ARGS site.yml`` from the ansible dir,
    with *env* added to the environment."""
    # Its own session, so that a timeout kills the module processes too: they hold the output
    # pipes, and killing ansible-playbook alone left communicate() waiting on them for good.
    proc = subprocess.Popen(
        [str(VENV_BIN / "ansible-playbook"), "-i", str(inventory), "-e", f"@{extra_vars}",
         *args, str(ANSIBLE_DIR / "site.yml")],
        cwd=ANSIBLE_DIR, env={**ansible_env(), **(env or {})}, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        stderr += f"\n[run_playbook: killed after {timeout_s:.0f} s]\n"
    output = stdout + stderr
    if log_path is not None:
        with log_path.open("a", encoding="utf-8") as log:
            log.write(output)
    return PlayResult(proc.returncode, output)
