"""Shared fixtures: a real moto server per session (reset per test), the course data by path."""

from __future__ import annotations

import csv
import os
import shutil
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from daemon_helpers import Queues, queue_with_dlq
from fake_lambda import FakeLambda

from localcloud.moto_server import MotoServer

REPO = Path(__file__).resolve().parents[1]

#: seconds spent per tier (tests/<tier>/): setup, call and teardown, session fixtures included.
_TIER_SECONDS: dict[str, float] = defaultdict(float)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    parts = report.nodeid.split("/")
    _TIER_SECONDS[parts[1] if len(parts) > 2 and parts[0] == "tests" else parts[0]] += (
        report.duration)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """One line with the time per tier, the figures the README quotes."""
    if _TIER_SECONDS:
        tiers = ", ".join(f"{tier} {seconds / 60:.1f} min"
                          for tier, seconds in sorted(_TIER_SECONDS.items()))
        terminalreporter.write_line(f"time per tier: {tiers}")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data (or $SHARED_DATA). Missing data is a failure, not a skip."""
    path = Path(os.environ.get("SHARED_DATA", REPO.parent / "shared" / "data")).resolve()
    assert (path / "cse546-2023" / "videos").is_dir(), f"course data not found at {path}"
    return path


@pytest.fixture(scope="session")
def course_data(shared_data: Path) -> Path:
    return shared_data / "cse546-2023"


@pytest.fixture(scope="session")
def course_records(course_data: Path) -> dict[str, str]:
    """video file name -> the course's expected first CSV row (`name,major,year`)."""
    with (course_data / "expected.csv").open(newline="") as handle:
        return {r["video"]: f"{r['name']},{r['major']},{r['year']}"
                for r in csv.DictReader(handle)}


@pytest.fixture(scope="session")
def image_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The exported models the built image carries (its /opt/models, export-onnx's output):
    what the handler role installs for the private function service's ONNX worker mode."""
    from lambda_service.image import ImageRoot
    from localcloud.machines.images import image_name

    dest = tmp_path_factory.mktemp("image-models") / "models"
    with ImageRoot(image_name(), "test-models") as root:
        assert root.path is not None
        shutil.copytree(root.path / "opt" / "models", dest)
    return dest


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    with MotoServer(log_path=log) as server:
        yield server


@pytest.fixture()
def aws_env(moto_server: MotoServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Point boto3 at a freshly reset moto server with dummy credentials; yields its URL."""
    moto_server.reset()
    for name, value in {
        "AWS_ENDPOINT_URL": moto_server.url,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    yield moto_server.url


@pytest.fixture()
def boto_session(aws_env: str) -> boto3.session.Session:
    return boto3.session.Session(region_name="us-east-1")


# -- the daemon against the real moto server and the fake Lambda (daemon and openstack tiers) ---

@pytest.fixture()
def sqs(boto_session: boto3.session.Session) -> Any:
    return boto_session.client("sqs")


@pytest.fixture()
def queues(sqs: Any) -> Queues:
    inp, inp_dlq = queue_with_dlq(sqs, "input")
    out, out_dlq = queue_with_dlq(sqs, "output")
    return Queues(inp, inp_dlq, out, out_dlq)


@pytest.fixture()
def fake_lambda(aws_env: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeLambda]:
    """The FAKE invoke endpoint (see fake_lambda.py); boto3 finds it via AWS_ENDPOINT_URL_LAMBDA."""
    fake = FakeLambda().start()
    monkeypatch.setenv("AWS_ENDPOINT_URL_LAMBDA", fake.url)
    yield fake
    fake.stop()
