"""The system tier's tools: the VM image, and systemd's view of the deployed unit."""

from __future__ import annotations

from typing import Any

from daemon_helpers import json_log_lines

from localcloud.machines.nspawn import Machine

#: the unit operators start, and the replicas it groups (handler_replicas in conftest).
UNIT = "handler"
REPLICAS = (f"{UNIT}@1", f"{UNIT}@2")
#: the heartbeat credential's secret: it must reach the service and nothing else (no log line).
CLOUD_SECRET = "not-a-real-secret-4f1e"
#: the private function service: its unit, port and the one key pair it lets call it.
FUNCTIONS_UNIT = "handler-functions"
FUNCTIONS_PORT = 9001
FUNCTIONS_KEY, FUNCTIONS_SECRET = "AKIDHANDLERVMFUNCS01", "functions-secret-9b2c"
#: the profile in the daemon's credentials file that holds that key
FUNCTIONS_PROFILE = "private-functions"
#: the web tier: its unit, port and the token callers off loopback must send (a secret too).
WEB_UNIT = "handler-web"
WEB_PORT = 8080
WEB_TOKEN = "web-token-not-a-secret-7d3a"


def unit_properties(vm: Machine, *names: str, unit: str = REPLICAS[0]) -> dict[str, str]:
    out = vm.run(["systemctl", "show", unit, *(f"--property={n}" for n in names)]).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def journal_json_lines(vm: Machine) -> list[dict[str, Any]]:
    """The replicas' log lines that journald kept, parsed (non-JSON lines are skipped)."""
    out = vm.run(["journalctl", "--unit", f"{UNIT}@*", "--output", "cat", "--no-pager"]).stdout
    return json_log_lines(out)
