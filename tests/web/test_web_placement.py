"""The web tier under load and off loopback, on the real local cloud: recognition through the
daemon's targets (a full first target spills past the burst rule), a bounded line of waiting
requests (503 with Retry-After past it, never a hang), its held requests in /api/status, and the
token that any caller off loopback must present."""

from __future__ import annotations

import base64
import subprocess
import sys
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from bench.web_harness import REPO, post_file, request, web_tier, write_configs
from localcloud.cloud import LocalCloud
from openstack_handler.private_cloud.autoscaler import WebBacklog


def _targets(cloud: LocalCloud, private_slots: int, aws_slots: int) -> list[dict[str, object]]:
    """A "private" target and an "aws" one, both on the local Lambda service (its frame function
    has two workers: the slots together never pass them)."""
    return [{"name": "private", "endpoint_url": cloud.lambda_url, "slots": private_slots},
            {"name": "aws", "slots": aws_slots}]


def test_a_full_private_target_spills_to_the_next_past_the_burst_rule(
        web_cloud: LocalCloud, tmp_path: Path, frames: list[tuple[str, bytes, str]]) -> None:
    config = write_configs(web_cloud, tmp_path, daemon_extra={
        "targets": _targets(web_cloud, 1, 1), "burst_after_s": 0.0})
    with web_tier(web_cloud, config) as web:
        with ThreadPoolExecutor(30) as pool:
            answers = list(pool.map(
                lambda f: post_file(web.url, f[0], f[1], accept="application/json"), frames[:30]))
        assert [a.status for a in answers] == [200] * 30
        assert [a.json()["result"] for a in answers] == [f[2] for f in frames[:30]]
        where = Counter(a.json()["target"] for a in answers)
        # THEN the private target ran its share and the overflow ran on "aws"
        assert where["private"] >= 5 and where["aws"] >= 5, where
        status = request(web.url, "GET", "/api/status").json()
        share = {t["name"]: t["share"] for t in status["targets"]}
        assert share["private"] > 0 and share["aws"] > 0 and status["held"] == 0


def test_without_bursting_the_overflow_waits_for_the_private_target(
        web_cloud: LocalCloud, tmp_path: Path, frames: list[tuple[str, bytes, str]]) -> None:
    config = write_configs(web_cloud, tmp_path, daemon_extra={"targets": _targets(web_cloud, 1, 1)})
    with web_tier(web_cloud, config) as web, ThreadPoolExecutor(10) as pool:
        answers = list(pool.map(
            lambda f: post_file(web.url, f[0], f[1], accept="application/json"), frames[:10]))
    assert {a.json()["target"] for a in answers} == {"private"}


def test_past_the_bounded_line_requests_get_503_with_retry_after_and_none_hangs(
        web_cloud: LocalCloud, tmp_path: Path, frames: list[tuple[str, bytes, str]]) -> None:
    config = write_configs(web_cloud, tmp_path,
                           daemon_extra={"targets": [_targets(web_cloud, 1, 1)[0]]},
                           web_extra={"max_waiting": 2, "wait_timeout_s": 30.0})
    with web_tier(web_cloud, config) as web:
        with ThreadPoolExecutor(16) as pool:
            answers = list(pool.map(lambda f: post_file(web.url, f[0], f[1]), frames[:16]))
        statuses = Counter(a.status for a in answers)
        # THEN one runs, two wait, and the rest are told to come back — nothing else
        assert set(statuses) == {200, 503} and statuses[200] >= 3 and statuses[503] >= 5, statuses
        for answer, (filename, _, person) in zip(answers, frames, strict=False):
            if answer.status == 200:
                assert answer.text == f"{filename[:-4]}:{person}"
            else:
                assert 1 <= int(answer.headers["retry-after"]) <= 60
                assert "waiting" in answer.json()["error"]["reason"]
        status = request(web.url, "GET", "/api/status").json()
        assert status["refused"] == statuses[503] and status["held"] == 0
        # AND it serves the next client as before
        filename, data, person = frames[0]
        assert post_file(web.url, filename, data).text == f"{filename[:-4]}:{person}"


def test_the_requests_it_holds_join_the_backlog_the_autoscaler_reads(
        web_cloud: LocalCloud, tmp_path: Path, frames: list[tuple[str, bytes, str]]) -> None:
    config = write_configs(web_cloud, tmp_path,
                           daemon_extra={"targets": [_targets(web_cloud, 1, 1)[0]]})
    with web_tier(web_cloud, config) as web:
        backlog = WebBacklog(web.url + "api/status")
        assert backlog.read() == 0
        # WHEN eight clients wait on one slot
        seen: list[int] = []
        with ThreadPoolExecutor(8) as pool:
            running = [pool.submit(post_file, web.url, f[0], f[1]) for f in frames[:8]]
            while not all(r.done() for r in running):
                seen.append(backlog.read())
        # THEN the controller's reading counted them, and nothing once they were answered
        assert [r.result().status for r in running] == [200] * 8
        assert max(seen) >= 4, seen
        assert backlog.read() == 0
    # AND a web tier that is gone counts 0 (it holds nothing)
    assert backlog.read() == 0


def _private_address() -> str:
    """This machine's first address that is not loopback (the web tier's "configured otherwise")."""
    out = subprocess.run(["ip", "-4", "-o", "addr"], capture_output=True, text=True,
                         check=True).stdout
    for line in out.splitlines():
        name, address = line.split()[1], line.split()[3].split("/")[0]
        if name != "lo":
            return address
    raise AssertionError(f"no address other than loopback here:\n{out}")


def test_off_loopback_it_refuses_to_start_without_a_token(web_cloud: LocalCloud,
                                                          tmp_path: Path) -> None:
    config = write_configs(web_cloud, tmp_path, web_extra={"host": _private_address()})
    run = subprocess.run([sys.executable, "-m", "openstack_handler", "web", "--config",  # noqa: PLW1510 - the exit status is the assertion
                          str(config)], capture_output=True, text=True, cwd=REPO, timeout=60,
                         env={"PATH": "/usr/bin:/bin", **web_cloud.client_env()})
    assert run.returncode == 78, run.stdout + run.stderr
    assert "needs a token" in run.stderr


def test_off_loopback_every_caller_needs_the_token_and_it_is_never_logged(
        web_cloud: LocalCloud, tmp_path: Path, frames: list[tuple[str, bytes, str]]) -> None:
    token = base64.urlsafe_b64encode(b"web-token-for-this-test-0123456789").decode()
    (tmp_path / "token").write_text(token + "\n")
    (tmp_path / "token").chmod(0o600)
    config = write_configs(web_cloud, tmp_path, web_extra={
        "host": _private_address(), "token_file": str(tmp_path / "token")})
    filename, data, person = frames[0]
    with web_tier(web_cloud, config) as web:
        assert "127.0.0.1" not in web.url
        refused = [post_file(web.url, filename, data),
                   post_file(web.url, filename, data, headers={"Authorization": "Bearer nope"}),
                   request(web.url, "GET", "/"),
                   request(web.url, "GET", "/api/status",
                           headers={"Authorization": "Basic " + base64.b64encode(
                               b"user:" + token[:-1].encode()).decode()})]
        assert [a.status for a in refused] == [401] * 4
        assert refused[0].headers["www-authenticate"].startswith("Basic")
        bearer = post_file(web.url, filename, data, headers={"Authorization": f"Bearer {token}"})
        assert (bearer.status, bearer.text) == (200, f"{filename[:-4]}:{person}")
        basic = request(web.url, "GET", "/", headers={
            "Authorization": "Basic " + base64.b64encode(f"anyone:{token}".encode()).decode()})
        assert basic.status == 200 and b"<form" in basic.body
    assert not any(token in line for line in web.lines)


@pytest.mark.parametrize("bad", [{"port": 70000}, {"max_waiting": -1}, {"colour": "blue"}])
def test_a_bad_settings_file_exits_78_naming_the_key(web_cloud: LocalCloud, tmp_path: Path,
                                                     bad: dict[str, object]) -> None:
    config = write_configs(web_cloud, tmp_path, web_extra=bad)
    run = subprocess.run([sys.executable, "-m", "openstack_handler", "web", "--config",  # noqa: PLW1510 - the exit status is the assertion
                          str(config)], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert run.returncode == 78
    assert next(iter(bad)) in run.stderr
