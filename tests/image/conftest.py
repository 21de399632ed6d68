"""The function's container image as `make image` built it (before any test: a build takes
minutes, and no test's timeout may hold one). A missing image fails, naming the command."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from lambda_service.image import ImageRoot
from localcloud.machines import images


@pytest.fixture(scope="session")
def function_image() -> str:
    """The image tag for the checkout as it is now (a hash of its inputs)."""
    name = images.image_name()
    assert images.image_exists(name), (
        f"{name} is not built for this checkout: run `make image` (make test does)")
    return name


@pytest.fixture(scope="session")
def image_root(function_image: str) -> Iterator[Path]:
    """The image's file system, mounted (a buildah working container, removed afterwards)."""
    with ImageRoot(function_image, "image-tests") as root:
        assert root.path is not None
        yield root.path


@pytest.fixture(scope="session")
def gallery_image(function_image: str, course_data: Path) -> str:
    """The function image with the course gallery in it, as the README's COPY puts it there."""
    from lambda_service.image import with_files
    from localcloud.cloud import IMAGE_GALLERY

    return with_files(function_image, {IMAGE_GALLERY: course_data / "encoding"})
