"""The whole pipeline for real: moto server and the Lambda endpoint as subprocesses (LocalCloud),
the real recognition function in warm workers, the real daemon as a subprocess."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from integration_helpers import Pipeline

from localcloud.cloud import LocalCloud


@pytest.fixture(scope="session")
def course_cloud(course_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCloud]:
    work = tmp_path_factory.mktemp("course-cloud")
    with LocalCloud(gallery=course_data / "encoding", students=course_data / "student_data.json",
                    concurrency=2, work_dir=work) as cloud:
        yield cloud


@pytest.fixture()
def pipeline(course_cloud: LocalCloud, tmp_path: Path) -> Iterator[Pipeline]:
    """The shared cloud for one test: empty queues before it, and it must leave them empty."""
    pipe = Pipeline(course_cloud, tmp_path)
    shared = pipe.shared_queues()
    shared.begin()
    yield pipe
    shared.end()
