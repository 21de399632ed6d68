"""Placement for real: two real Lambda services on the local cloud — a second one standing for the
private cloud's function service, the cloud's own standing for AWS — and the real daemon process
choosing, per message, where each video runs.

The function is the synthetic one (bench/synthetic.py: 1 s, then the result message), so that
where and when each video ran is the only thing measured. Each service's own ``/health``
counters say how many invocations it ran; the daemon's ``status`` must say the same. The
private service verifies every call's SigV4 signature against its own key pair, which the
daemon signs its calls to it with (the target's ``profile``, from a shared credentials file).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from daemon_helpers import json_log_lines, status_targets
from polling import wait_for
from queue_hygiene import video_path_queues

from bench.procs import DaemonProc, run_daemon
from bench.synthetic_cloud import send_video_events, synthetic_cloud
from lambda_service.endpoint import LambdaEndpoint
from localcloud.cloud import LocalCloud

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
LATENCY_S = 1.0
PRIVATE_SLOTS = 2
AWS_SLOTS = 4
PRIVATE_KEY, PRIVATE_SECRET = "AKIDPRIVATEFUNCTIONS", "the-private-service-secret"


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCloud]:
    with synthetic_cloud(tmp_path_factory.mktemp("placement-cloud"), prefix="place",
                         slots=AWS_SLOTS, latency_s=LATENCY_S) as local:
        yield local


@pytest.fixture()
def private(cloud: LocalCloud, tmp_path: Path) -> Iterator[LambdaEndpoint]:
    """The private function service: the same function, PRIVATE_SLOTS slots, its own process."""
    service = cloud.private_service(concurrency=PRIVATE_SLOTS, log_path=tmp_path / "private.log",
                                    credentials={PRIVATE_KEY: PRIVATE_SECRET})
    service.start()
    yield service
    service.stop()


@pytest.fixture()
def queues(cloud: LocalCloud) -> Iterator[None]:
    shared = video_path_queues(cloud)
    shared.begin()
    yield
    shared.end()


def _runs(endpoint: LambdaEndpoint, function: str) -> int:
    """How many times the service ran the function's handler (its own counter)."""
    return int(endpoint.health()["functions"][function].get("invocations", 0))


def _results(daemon: DaemonProc) -> set[str]:
    results = daemon.config.parent / "results"
    return set(os.listdir(results)) if results.is_dir() else set()


def _wait_results(daemon: DaemonProc, keys: list[str], timeout_s: float = 90) -> None:
    wanted = {k.rsplit(".", 1)[0] + ".csv" for k in keys}
    wait_for(lambda: wanted <= _results(daemon), timeout_s=timeout_s,
             what=f"{len(wanted)} result files; daemon log: {daemon.tail()}")


def _status(daemon: DaemonProc) -> dict[str, dict[str, str]]:
    """The daemon's `status` table of targets: {target: {column: cell}}."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env |= {"PYTHONPATH": str(REPO), "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing"}
    out = subprocess.run([sys.executable, "-m", "openstack_handler", "status", "--config",
                          str(daemon.config)], env=env, capture_output=True, text=True,
                         timeout=60, check=True).stdout
    return status_targets(out)


@pytest.fixture()
def private_key(tmp_path: Path) -> dict[str, str]:
    """The daemon's environment naming a shared credentials file with the private key pair."""
    path = tmp_path / "aws-credentials"
    path.write_text(f"[private]\naws_access_key_id = {PRIVATE_KEY}\n"
                    f"aws_secret_access_key = {PRIVATE_SECRET}\n")
    path.chmod(0o600)
    return {"AWS_SHARED_CREDENTIALS_FILE": str(path)}


def _targets(cloud: LocalCloud, private: LambdaEndpoint | None, *,
             private_slots: int = PRIVATE_SLOTS) -> list[dict[str, Any]]:
    targets = []
    if private is not None:
        targets.append({"name": "private", "endpoint_url": private.url, "slots": private_slots,
                        "price_per_gb_s": 0.0, "price_per_request": 0.0,
                        "profile": "private"})
    targets.append({"name": "aws", "endpoint_url": cloud.lambda_url, "slots": AWS_SLOTS})
    return targets


@pytest.mark.parametrize("burst_after_s", [None, 2.5])
def test_private_first_and_the_overflow_goes_to_aws_only_past_burst_after_s(
        cloud: LocalCloud, private: LambdaEndpoint, queues: None, tmp_path: Path,
        burst_after_s: float | None, private_key: dict[str, str]) -> None:
    function = cloud.resources.function_name
    aws_before = _runs(cloud.endpoint, function)
    settings: dict[str, Any] = {"targets": _targets(cloud, private)}
    if burst_after_s is not None:
        settings["burst_after_s"] = burst_after_s
    keys = [f"burst-{burst_after_s}-{i:02d}.mp4" for i in range(16)]
    with run_daemon(cloud, tmp_path / "daemon", concurrency=0, settings=settings,
                    env_overrides=private_key) as daemon:
        daemon.wait_ready()
        # GIVEN a burst of 16 videos: 8 s of work for the 2 private slots alone
        started = time.monotonic()
        send_video_events(cloud, keys)
        # WHEN the daemon places them
        _wait_results(daemon, keys)
        wall_s = time.monotonic() - started
    on_private = _runs(private, function)
    on_aws = _runs(cloud.endpoint, function) - aws_before
    table = _status(daemon)
    # THEN the private slots ran work throughout; without a burst rule aws ran nothing (and
    # the burst took the private slots' time), with one aws took the overflow, which came only
    # after it had waited burst_after_s (the private slots ran 2 per second meanwhile)
    assert on_private + on_aws == 16, (on_private, on_aws)
    assert int(table["private"]["INVOCATIONS"]) == on_private
    if burst_after_s is None:
        assert on_aws == 0 and wall_s >= 16 / PRIVATE_SLOTS * LATENCY_S
        assert "aws" in table and table["aws"]["INVOCATIONS"] == "0"
    else:
        assert on_aws >= 4 and on_private >= PRIVATE_SLOTS * burst_after_s / LATENCY_S, \
            (on_private, on_aws)
        # each video that ran on aws had waited burst_after_s since it was sent (SentTimestamp
        # is in milliseconds), while private ones started sooner
        waited = {"private": [], "aws": []}
        for line in json_log_lines(daemon.log_path.read_text()):
            if line.get("event") == "video.processed":
                waited[line["target"]].append(line["waited_ms"])
        assert len(waited["aws"]) == on_aws and len(waited["private"]) == on_private
        assert min(waited["aws"]) >= burst_after_s * 1000 - 5, waited
        assert min(waited["private"]) < burst_after_s * 1000, waited
        assert int(table["aws"]["INVOCATIONS"]) == on_aws
        assert wall_s < 16 / PRIVATE_SLOTS * LATENCY_S


@pytest.mark.parametrize("only", ["private", "aws"])
def test_one_target_alone_runs_everything(cloud: LocalCloud, private: LambdaEndpoint,
                                          queues: None, tmp_path: Path, only: str,
                                          private_key: dict[str, str]) -> None:
    function = cloud.resources.function_name
    aws_before = _runs(cloud.endpoint, function)
    targets = [t for t in _targets(cloud, private) if t["name"] == only]
    keys = [f"only-{only}-{i}.mp4" for i in range(6)]
    with run_daemon(cloud, tmp_path / "daemon", concurrency=0, env_overrides=private_key,
                    settings={"targets": targets, "burst_after_s": 0.0}) as daemon:
        daemon.wait_ready()
        send_video_events(cloud, keys)
        _wait_results(daemon, keys)
    ran = {"private": _runs(private, function), "aws": _runs(cloud.endpoint, function) - aws_before}
    assert ran[only] == 6 and sum(ran.values()) == 6, ran
    assert list(_status(daemon)) == [only]


def test_the_private_service_killed_mid_work_its_videos_finish_on_aws_none_lost_or_doubled(
        cloud: LocalCloud, queues: None, tmp_path: Path, private_key: dict[str, str]) -> None:
    function = cloud.resources.function_name
    aws_before = _runs(cloud.endpoint, function)
    service = cloud.private_service(concurrency=4, log_path=tmp_path / "private.log",
                                    credentials={PRIVATE_KEY: PRIVATE_SECRET}).start()
    keys = [f"kill-{i:02d}.mp4" for i in range(60)]
    try:
        # GIVEN the private service with 4 slots first, and no burst rule: only a private
        # target that is down sends its work on (visibility 8 s: an interrupted video returns
        # then)
        settings = {"targets": _targets(cloud, service, private_slots=4),
                    "visibility_timeout_s": 8, "grace_period_s": 5}
        with run_daemon(cloud, tmp_path / "daemon", concurrency=0, settings=settings,
                    env_overrides=private_key) as daemon:
            daemon.wait_ready()
            send_video_events(cloud, keys)
            wait_for(lambda: len(_results(daemon)) >= 12, timeout_s=60,
                     what=f"12 results first; {daemon.tail()}")
            # WHEN the whole service (its workers too) dies with SIGKILL mid-invocation
            os.killpg(service.pid, signal.SIGKILL)
            _wait_results(daemon, keys, timeout_s=120)
            table = _status(daemon)
    finally:
        service.stop()
    # THEN every video has exactly its one result file, the rest ran on aws, and nothing is
    # left on the queues or went to the dead-letter queue (the fixture checks them empty)
    results = _results(daemon)
    assert results == {k.rsplit(".", 1)[0] + ".csv" for k in keys}, sorted(results)
    on_aws = _runs(cloud.endpoint, function) - aws_before
    assert on_aws >= 60 - int(table["private"]["INVOCATIONS"]) + int(table["private"]["FAILED"])
    assert int(table["aws"]["INVOCATIONS"]) == on_aws and on_aws >= 30
    assert int(table["private"]["FAILED"]) >= 1  # the invocations the kill interrupted
    sqs = cloud.session().client("sqs")
    dlq = sqs.get_queue_attributes(QueueUrl=cloud.provisioned.input_dlq_url,
                                   AttributeNames=["ApproximateNumberOfMessages"])
    assert dlq["Attributes"]["ApproximateNumberOfMessages"] == "0"


def test_aws_throttling_everything_private_carries_on_alone(
        cloud: LocalCloud, private: LambdaEndpoint, queues: None, tmp_path: Path,
        private_key: dict[str, str]) -> None:
    function = cloud.resources.function_name
    aws_before = _runs(cloud.endpoint, function)
    cloud.set_faults({"throttle_rate": 1.0})
    keys = [f"throttled-{i:02d}.mp4" for i in range(10)]
    try:
        # GIVEN bursting at once, and an aws that answers every invocation with a 429
        with run_daemon(cloud, tmp_path / "daemon", concurrency=0, env_overrides=private_key,
                        settings={"targets": _targets(cloud, private),
                                  "burst_after_s": 0.0}) as daemon:
            daemon.wait_ready()
            # WHEN ten videos arrive
            send_video_events(cloud, keys)
            _wait_results(daemon, keys)
            table = _status(daemon)
    finally:
        cloud.set_faults(None)
    # THEN the private service ran every one, and aws ran none: each throttled invocation
    # moved to private, and aws was probed with dry runs, which do not see throttling
    assert _runs(private, function) == 10
    assert _runs(cloud.endpoint, function) == aws_before
    assert int(table["aws"]["FAILED"]) == int(table["aws"]["INVOCATIONS"]) >= 1
    assert int(table["private"]["INVOCATIONS"]) == 10


def test_a_daemon_whose_key_the_private_service_refuses_runs_nothing_there(
        cloud: LocalCloud, private: LambdaEndpoint, queues: None, tmp_path: Path) -> None:
    function = cloud.resources.function_name
    aws_before = _runs(cloud.endpoint, function)
    # GIVEN a daemon that signs its private calls with a secret the service does not hold
    wrong = tmp_path / "wrong-credentials"
    wrong.write_text(f"[private]\naws_access_key_id = {PRIVATE_KEY}\n"
                     "aws_secret_access_key = not-the-secret\n")
    keys = [f"refused-{i}.mp4" for i in range(4)]
    with run_daemon(cloud, tmp_path / "daemon", concurrency=0,
                    env_overrides={"AWS_SHARED_CREDENTIALS_FILE": str(wrong)},
                    settings={"targets": _targets(cloud, private)}) as daemon:
        daemon.wait_ready()
        # WHEN four videos arrive
        send_video_events(cloud, keys)
        _wait_results(daemon, keys)
        table = _status(daemon)
    # THEN the private service ran none of them (each call was refused with Lambda's 403,
    # logged once), and they ran on aws, the next target, although no burst rule is set
    assert _runs(private, function) == 0
    assert _runs(cloud.endpoint, function) - aws_before == 4
    assert int(table["private"]["FAILED"]) == int(table["private"]["INVOCATIONS"]) >= 1
    refused = [line for line in json_log_lines(daemon.log_path.read_text())
               if line.get("event") == "target.refused"]
    assert refused and "InvalidSignatureException" in refused[0]["error"]
