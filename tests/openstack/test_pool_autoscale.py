"""The private pool grows and shrinks with the backlog, on the real Heat, with the real daemon,
controller and agents.

Against the OpenStack container (Heat's ResourceGroup of Nova servers on the fake driver): the
controller (``openstack-handler autoscale``, a process) sizes the pool's stack from the input
queue's backlog; the daemon (``openstack-handler run``) sends each video to the pool's servers it
discovers in Nova, bursting to the local cloud's Lambda (standing for AWS) while servers boot;
the servers' guests are stood in for on the host (bench/pool_harness.py: a real private
function service and a real pool agent per ACTIVE server). The function is the synthetic one
(bench/synthetic.py: 1 s, then the result message), so timings are the orchestration's alone.
"""

from __future__ import annotations

import io
import os
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import admin_connection, heat_connection
from daemon_helpers import json_log_lines
from queue_hygiene import video_path_queues

from bench.pool_harness import (
    GuestStandIn,
    autoscaler,
    daemon_pool_settings,
    decisions,
    pool_stack,
    process_env,
    wait_until,
)
from bench.procs import run_daemon
from bench.synthetic_cloud import send_video_events, synthetic_cloud
from localcloud.cloud import LocalCloud
from openstack_handler.cli import main
from openstack_handler.private_cloud.pool import HeatPool

pytestmark = pytest.mark.openstack

REPO = Path(__file__).resolve().parents[2]
LATENCY_S = 1.0
SLOTS_PER_SERVER = 2
AWS_SLOTS = 4
INTERVAL_S = 2.0
MAX_VMS = 4


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCloud]:
    """The local cloud: moto (queues, buckets) and its Lambda service, which stands for AWS."""
    with synthetic_cloud(tmp_path_factory.mktemp("pool-cloud"), prefix="pool",
                         slots=AWS_SLOTS, latency_s=LATENCY_S) as local:
        yield local


@pytest.fixture()
def queues(cloud: LocalCloud) -> Iterator[None]:
    shared = video_path_queues(cloud)
    shared.begin()
    yield
    shared.end()


@pytest.fixture(scope="module")
def pool_image(openstack_cloud: Any) -> Iterator[Any]:
    conn = heat_connection(openstack_cloud)
    image = conn.image.create_image(name="handler-pool-image", data=b"\0" * 1024,
                                    disk_format="raw", container_format="bare",
                                    allow_duplicates=True)
    yield image
    conn.image.delete_image(image)


@dataclass
class Pool:
    name: str
    heat: HeatPool
    guests: GuestStandIn


@pytest.fixture()
def pool(openstack_cloud: Any, cloud_env: str, cloud: LocalCloud, pool_image: Any,
         tmp_path: Path) -> Iterator[Pool]:
    """An empty pool stack (count 0), as the handler_pool role applies it, with its guests
    stood in for."""
    conn = heat_connection(openstack_cloud)
    with pool_stack(conn, image_id=pool_image.id) as name:
        guests = GuestStandIn(cloud=cloud, cloud_name=cloud_env, pool_name=name,
                              slots=SLOTS_PER_SERVER, work_dir=tmp_path).start()
        try:
            yield Pool(name, HeatPool(conn, name), guests)
        finally:
            guests.stop()


def _env(cloud: LocalCloud, openstack_cloud: Any, tmp_path: Path) -> dict[str, str]:
    return process_env(cloud, openstack_cloud.clouds_yaml, tmp_path)


@contextmanager
def controller(cloud: LocalCloud, openstack_cloud: Any, pool: Pool, tmp_path: Path,
               **overrides: Any) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    """``openstack-handler autoscale`` as a process; yields it and its log."""
    settings = {"cloud_name": openstack_cloud.heat_cloud_name, "stack_name": pool.name,
                "interval_s": INTERVAL_S, "min_vms": 0, "max_vms": MAX_VMS,
                "acceptable_wait_s": 10.0, "assumed_s_per_message": LATENCY_S / SLOTS_PER_SERVER,
                "max_step_out": MAX_VMS, "scale_in_cooldown_s": 4.0,
                "boot_timeout_s": 60.0} | overrides
    with autoscaler(cloud, clouds_yaml=openstack_cloud.clouds_yaml, settings=settings,
                    work=tmp_path) as running:
        yield running


def _daemon_settings(pool: Pool, cloud_env: str, cloud: LocalCloud) -> dict[str, Any]:
    return daemon_pool_settings(stack_name=pool.name, cloud_name=cloud_env,
                                aws_url=cloud.lambda_url, slots=SLOTS_PER_SERVER,
                                aws_slots=AWS_SLOTS, max_servers=MAX_VMS)


@pytest.mark.parametrize("cooldown_s", [4.0, 0.0], ids=["after-the-work", "during-the-work"])
def test_a_backlog_grows_the_pool_bursts_while_it_boots_and_drains_it_back_to_min(
        cloud: LocalCloud, openstack_cloud: Any, cloud_env: str, pool: Pool, queues: None,
        tmp_path: Path, cooldown_s: float) -> None:
    """With no cooldown the controller starts draining servers as soon as the backlog falls
    below what they could do — while they still run videos — and none is lost or repeated."""
    function = cloud.resources.function_name
    aws_before = int(cloud.function_stats(function).get("invocations", 0))
    keys = [f"backlog-{i:03d}.mp4" for i in range(120)]
    env = _env(cloud, openstack_cloud, tmp_path)
    sizes: list[tuple[float, int]] = []
    with run_daemon(cloud, tmp_path / "daemon", concurrency=0, env_overrides=env,
                    settings=_daemon_settings(pool, cloud_env, cloud)) as daemon, \
            controller(cloud, openstack_cloud, pool, tmp_path,
                       scale_in_cooldown_s=cooldown_s) as (proc, log_path):
        daemon.wait_ready()
        # GIVEN an empty pool WHEN a backlog of 120 videos arrives
        started = time.monotonic()
        send_video_events(cloud, keys)

        def done() -> bool:
            sizes.append((time.monotonic() - started, pool.heat.read().count))
            results = daemon.config.parent / "results"
            return results.is_dir() and len(os.listdir(results)) >= len(keys)

        wait_until(done, timeout_s=120, what=f"120 results; daemon: {daemon.tail()}")
        worked_off_s = time.monotonic() - started
        # `status --cloud` shows the pool: its counts and the controller's last decision
        out = io.StringIO()
        with redirect_stdout(out):
            assert main(["status", "--cloud", cloud_env, "--pool", pool.name,
                         "--autoscale-state", str(tmp_path / "autoscale-state.json")]) == 0
        pool_lines = out.getvalue().split(f"pool {pool.name}: ", 1)[1]
        assert pool_lines.startswith("desired "), pool_lines
        assert "last decision" in pool_lines and ", booting " in pool_lines, pool_lines
        # THEN it shrinks back to min_vms (0) through drains once the backlog is gone
        wait_until(lambda: pool.heat.read().count == 0 and not pool.guests.guests,
                   timeout_s=90, what=f"the pool back to 0; decisions: {decisions(log_path)}")
        assert proc.poll() is None, "the controller still runs"
    made = decisions(log_path)
    results = sorted(os.listdir(daemon.config.parent / "results"))
    assert results == sorted(k.removesuffix(".mp4") + ".csv" for k in keys)
    # the size asked for: backlog 120 / (10 s acceptable ÷ 0.5 s per message) = 6 → max 4,
    # ordered at the first decision that saw the backlog, and never more than max_vms
    first_out = next(d for d in made if d["action"] == "out")
    assert (first_out["target"], first_out["wanted"]) == (MAX_VMS, MAX_VMS), first_out
    assert max(count for _, count in sizes) == MAX_VMS
    assert all(d.get("wanted", 0) <= MAX_VMS for d in made)
    grown_at = next(t for t, count in sizes if count == MAX_VMS)
    assert grown_at <= 2 * INTERVAL_S + 2, sizes[:20]
    # every video ran once: on the pool's services or on "aws" (the burst while they booted)
    on_aws = int(cloud.function_stats(function).get("invocations", 0)) - aws_before
    on_pool = pool.guests.runs()
    assert on_pool + on_aws == len(keys), (on_pool, on_aws)
    assert on_aws > 0 and on_pool > 0
    # scale-in was drains, and no server left with work running on it
    removals = [d for d in made if d["action"] == "remove"]
    assert removals and all(d["reason"].startswith("drained") for d in removals)
    assert len(pool.guests.gone) == MAX_VMS
    assert all(g.final is not None and g.final.get("busy") == 0 for g in pool.guests.gone)
    assert not [d for d in made if d["action"] == "replace"]
    assert not pool.guests.errors
    if cooldown_s == 0:  # some server was chosen for a drain while it ran videos
        chosen = [server for d in made if d["action"] == "in" for server in d["draining_now"]]
        assert any(server["in_flight"] > 0 for server in chosen), chosen
    print(f"120 videos in {worked_off_s:.1f} s: pool {on_pool}, aws {on_aws}; pool grown to "
          f"{MAX_VMS} at {grown_at:.1f} s")


def _serving(pool: Pool) -> list[Any]:
    return [s for s in pool.heat.read().servers if s.heartbeat_at is not None
            and s.status == "ACTIVE" and not s.drain_requested]


def test_a_server_in_error_is_replaced(cloud: LocalCloud, openstack_cloud: Any, pool: Pool,
                                       queues: None, tmp_path: Path) -> None:
    # GIVEN a pool held at 2 servers that heartbeat
    with controller(cloud, openstack_cloud, pool, tmp_path, min_vms=2) as (_, log_path):
        wait_until(lambda: len(_serving(pool)) == 2, timeout_s=60, what="2 serving servers")
        sick = _serving(pool)[0]
        # WHEN Nova puts one into ERROR
        admin_connection(openstack_cloud).compute.reset_server_state(sick.id, "error")
        # THEN Heat replaces it (marked unhealthy, then a stack update) and the pool is 2 again
        wait_until(lambda: sick.id not in {s.id for s in pool.heat.read().servers}
                   and len(_serving(pool)) == 2, timeout_s=90,
                   what=f"{sick.name} replaced; decisions: {decisions(log_path)[-5:]}")
    replaced = [d for d in decisions(log_path) if d["action"] == "replace"]
    assert replaced and "ERROR" in replaced[0]["reason"]
    assert pool.heat.read().count == 2


def test_a_quota_holds_the_pool_with_one_log_line(
        cloud: LocalCloud, openstack_cloud: Any, cloud_env: str, pool: Pool, queues: None,
        tmp_path: Path) -> None:
    admin = admin_connection(openstack_cloud)
    project = admin.identity.find_project("handler", ignore_missing=False)
    others = [s for s in admin.compute.servers(details=True, all_projects=True,
                                              project_id=project.id)
              if s.metadata.get("handler_pool") != pool.name]
    before = admin.compute.get_quota_set(project).instances
    admin.compute.update_quota_set(project, instances=len(others) + 3)
    try:
        keys = [f"quota-{i:03d}.mp4" for i in range(120)]
        with run_daemon(cloud, tmp_path / "daemon", concurrency=0,
                        env_overrides=_env(cloud, openstack_cloud, tmp_path),
                        settings=_daemon_settings(pool, cloud_env, cloud)) as daemon, \
                controller(cloud, openstack_cloud, pool, tmp_path) as (_, log_path):
            daemon.wait_ready()
            # GIVEN room for 3 servers WHEN the backlog asks for 4
            send_video_events(cloud, keys)
            wait_until(lambda: any(d["reason"].startswith("quota") for d in decisions(log_path)),
                       timeout_s=60, what="a quota decision")
            # THEN the pool holds at 3 (the refused member dropped) and the work is done
            wait_until(lambda: (len(os.listdir(daemon.config.parent / "results"))
                                if (daemon.config.parent / "results").is_dir() else 0)
                       >= len(keys), timeout_s=120, what="120 results")
            state = pool.heat.read()
            assert state.count == 3 and len(state.servers) == 3, state
        lines = [line for line in json_log_lines(log_path.read_text())
                 if line.get("event") == "autoscale.quota_refused"]
        assert len(lines) == 1 and lines[0]["holding"] == 3
    finally:
        admin.compute.update_quota_set(project, instances=before)


def test_a_controller_killed_mid_scale_out_and_restarted_creates_no_doubles(
        cloud: LocalCloud, openstack_cloud: Any, pool: Pool, queues: None,
        tmp_path: Path) -> None:
    # a backlog nobody works off
    send_video_events(cloud, [f"kill-{i:03d}.mp4" for i in range(120)])
    with controller(cloud, openstack_cloud, pool, tmp_path) as (proc, log_path):
        wait_until(lambda: any(d["action"] == "out" for d in decisions(log_path)),
                   timeout_s=30, what="a scale-out")
        proc.kill()  # -9, while Heat creates the servers
        proc.wait()
    first_run = len(decisions(log_path))
    with controller(cloud, openstack_cloud, pool, tmp_path) as (_, log_path):
        wait_until(lambda: len(decisions(log_path)) >= first_run + 4, timeout_s=60,
                   what="four rounds after the restart")
    after = decisions(log_path)[first_run:]
    assert not [d for d in after if d["action"] == "out"], after  # it saw count 4 already
    state = pool.heat.read()
    assert state.count == MAX_VMS and len(state.servers) == MAX_VMS
    assert len({s.id for s in state.servers}) == MAX_VMS
    # the backlog was only there to be measured
    cloud.session().client("sqs").purge_queue(QueueUrl=cloud.provisioned.input_queue_url)
