"""The web tier for real: moto server and the local Lambda service as subprocesses, the camera
path's frame function and the video function (the real lambda_image entry points, the course
gallery), and ``openstack-handler web`` as its own process on them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.web_harness import WebTier, course_frames, web_tier, write_configs
from localcloud.cloud import LocalCloud
from openstack_handler.provisioning.spec import ResourceSpec


@pytest.fixture(scope="session")
def web_cloud(course_data: Path, tmp_path_factory: pytest.TempPathFactory
              ) -> Iterator[LocalCloud]:
    with LocalCloud(gallery=course_data / "encoding", students=course_data / "student_data.json",
                    resources=ResourceSpec(prefix="web", url_auth_type="NONE"),
                    concurrency=1, camera=True, camera_concurrency=2,
                    work_dir=tmp_path_factory.mktemp("web-cloud")) as cloud:
        yield cloud


@pytest.fixture(scope="module")
def web(web_cloud: LocalCloud, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebTier]:
    """The web tier with the local cloud's one Lambda target, as `local up` runs it."""
    config = write_configs(web_cloud, tmp_path_factory.mktemp("web"))
    with web_tier(web_cloud, config) as tier:
        yield tier


@pytest.fixture(scope="session")
def frames(course_data: Path) -> list[tuple[str, bytes, str]]:
    """100 frames of the course clips: (file name, JPEG, the person in it)."""
    return course_frames(course_data, 100)
