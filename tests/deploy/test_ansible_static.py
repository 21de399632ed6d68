"""What can be checked without a machine to deploy to: lint, syntax, the rendered systemd unit
(verify, security exposure) and the rendered DevStack local.conf (dsconf, shellcheck, bash)."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
from ansible_helpers import ANSIBLE_DIR, REPO, VENV_BIN, ansible_env

#: systemd-analyze's "Overall exposure level" must not exceed this (0 = locked down, 10 = open).
MAX_EXPOSURE = 2.5


def render(template: Path, role: str, dest: Path, extra_vars: dict[str, Any]) -> str:
    """Render a template as the role would: its defaults, its vars, then *extra_vars*."""
    role_dir = ANSIBLE_DIR / "roles" / role
    var_files = [f for f in (role_dir / "defaults/main.yml", role_dir / "vars/main.yml")
                 if f.is_file()]
    proc = subprocess.run(
        [str(VENV_BIN / "ansible"), "localhost", "-c", "local", "-m", "ansible.builtin.template",
         "-a", f"src={template} dest={dest}", *(a for f in var_files for a in ("-e", f"@{f}")),
         "-e", json.dumps(extra_vars)],
        cwd=ANSIBLE_DIR, env=ansible_env(), capture_output=True, text=True, timeout=120,
        check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return dest.read_text()


def test_ansible_lint_production_profile_passes() -> None:
    proc = subprocess.run([str(VENV_BIN / "ansible-lint"), "--offline", "--profile", "production",
                           "--nocolor"], cwd=ANSIBLE_DIR, env=ansible_env(), capture_output=True,
                          text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]


def test_site_yml_passes_the_syntax_check() -> None:
    proc = subprocess.run([str(VENV_BIN / "ansible-playbook"), "--syntax-check", "site.yml"],
                          cwd=ANSIBLE_DIR, env=ansible_env(), capture_output=True, text=True,
                          timeout=120, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def rendered_units(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The group unit and replica 1 of the template (every optional part switched on, ExecStart
    pointing at this venv's CLI), in one directory as systemd would find them."""
    unit_dir = tmp_path_factory.mktemp("units")
    extra_vars = {"handler_venv_dir": str(VENV_BIN.parent),
                  "handler_functions_venv_dir": str(VENV_BIN.parent),
                  "handler_aws_credentials": {"aws_access_key_id": "x"},
                  "handler_clouds_yaml": {"clouds": {}},
                  "handler_environment": {"AWS_ENDPOINT_URL": "http://10.0.0.1:5000",
                                          "ODD": 'a "quoted" 100% value'},
                  "handler_settings": {"grace_period_s": 45}, "handler_replicas": 3}
    templates = ANSIBLE_DIR / "roles/handler/templates"
    render(templates / "handler@.service.j2", "handler", unit_dir / "handler@.service",
           extra_vars)
    render(templates / "handler.service.j2", "handler", unit_dir / "handler.service", extra_vars)
    render(templates / "handler-functions.service.j2", "handler",
           unit_dir / "handler-functions.service",
           {**extra_vars, "handler_functions_enabled": True, "handler_functions_host": "10.0.0.5"})
    (unit_dir / "handler@1.service").symlink_to("handler@.service")
    return unit_dir


def test_the_units_verify_without_a_single_complaint(rendered_units: Path) -> None:
    proc = subprocess.run(["systemd-analyze", "verify", "handler.service", "handler@1.service",
                           "handler-functions.service"],
                          cwd=rendered_units, capture_output=True, text=True, timeout=60,
                          check=False)
    assert proc.returncode == 0 and proc.stderr.strip() == "", proc.stderr
    replica = (rendered_units / "handler@.service").read_text()
    assert "RestartPreventExitStatus=78" in replica and "TimeoutStopSec=75" in replica
    assert 'Environment="ODD=a \\"quoted\\" 100%% value"' in replica
    assert "Environment=OPENSTACK_HANDLER_REPLICA=%i" in replica
    assert "PartOf=handler.service" in replica
    functions = (rendered_units / "handler-functions.service").read_text()
    assert "--host 10.0.0.5 --port 9001" in functions and "Type=notify" in functions
    assert "LoadCredential=keys.json:/etc/handler-functions/keys.json" in functions
    group = (rendered_units / "handler.service").read_text()
    assert [ln for ln in group.splitlines() if ln.startswith("Wants=")] == [
        "Wants=handler@1.service", "Wants=handler@2.service", "Wants=handler@3.service"]


@pytest.mark.parametrize("unit", ["handler@1.service", "handler-functions.service"])
def test_a_units_exposure_is_at_most_2_5(rendered_units: Path, unit: str) -> None:
    proc = subprocess.run(["systemd-analyze", "security", "--offline=yes",
                           f"--threshold={int(MAX_EXPOSURE * 10)}", unit],
                          cwd=rendered_units, capture_output=True, text=True, timeout=60,
                          check=False)
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", proc.stdout)
    assert match, proc.stdout[-2000:] + proc.stderr
    assert float(match[1]) <= MAX_EXPOSURE and proc.returncode == 0, proc.stdout[-3000:]


def test_local_conf_renders_to_a_localrc_that_shellcheck_and_bash_accept(tmp_path: Path) -> None:
    password = "s3cret pass'w$rd"  # quoting must survive spaces, quotes and dollars
    local_conf = tmp_path / "local.conf"
    render(REPO / "devstack/local.conf.j2", "devstack_host", local_conf, {"devstack_host_admin_password": password,
                        "devstack_host_ip": "192.0.2.10"})
    localrc = tmp_path / "localrc"
    subprocess.run([str(VENV_BIN / "dsconf"), "extract-localrc", str(local_conf), str(localrc)],
                   check=True, timeout=60)
    # SC2034: the variables are read by stack.sh, which sources this file. SC2016: a literal $
    # in a single-quoted password is the point of quoting it.
    lint = subprocess.run([str(VENV_BIN / "shellcheck"), "--shell=bash",
                           "--exclude=SC2034,SC2016",
                           str(localrc)], capture_output=True, text=True, timeout=60, check=False)
    assert lint.returncode == 0, lint.stdout
    probe = ("disable_service() { :; }; DEST=/opt/stack; source \"$1\"; "
             "printf '%s\\n' \"$ADMIN_PASSWORD\" \"$SERVICE_PASSWORD\" \"$HOST_IP\" \"$IMAGE_URLS\"")
    values = subprocess.run(["bash", "-c", probe, "bash", str(localrc)], capture_output=True,
                            text=True, timeout=60, check=True).stdout.splitlines()
    assert values[:3] == [password, password, "192.0.2.10"]
    assert values[3].startswith("https://") and values[3].endswith(".qcow2")
    # AND the Nova option lands in nova.conf's [DEFAULT]
    nova = tmp_path / "nova.conf"
    subprocess.run([str(VENV_BIN / "dsconf"), "extract", str(local_conf), "post-config",
                    "$NOVA_CONF", str(nova)], check=True, timeout=60)
    assert "cpu_allocation_ratio = 4.0" in nova.read_text()
