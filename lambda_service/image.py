"""A container image's file system and configuration, as the local Lambda runs it.

`ImageRoot` is one buildah working container of the image, mounted: the root file system every
execution environment of a function boots read-only (`lambda_service.environment`).
`ImageConfig` is what the image says about how to run it (ENTRYPOINT, CMD, ENV, WORKDIR), read
from its OCI configuration the way Lambda reads it.

Working containers are named ``lambda-<function>-<pid>-r<n>``, one per pool (a function's
update, or its reserved concurrency, makes a new pool while the old one's environments finish on
their own root): a root left behind by an endpoint that was killed is removed the next time one
for the same function starts.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import os
import re
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

import structlog

log = structlog.get_logger()

_OWNED = re.compile(r"^lambda-(?P<function>[A-Za-z0-9_-]+)-(?P<pid>\d+)(?:-r\d+)?$")
_ROOTS = itertools.count(1)


class ImageRunError(RuntimeError):
    """The image cannot be found, mounted or read."""


@dataclass(frozen=True)
class ImageConfig:
    """How the image asks to be run."""

    entrypoint: tuple[str, ...]
    cmd: tuple[str, ...]
    env: tuple[tuple[str, str], ...]
    workdir: str

    @classmethod
    def read(cls, image: str) -> ImageConfig:
        config = json.loads(_buildah("inspect", "--type", "image", image).stdout)["OCIv1"]
        body = config.get("config") or {}
        env = tuple(tuple(item.split("=", 1)) for item in body.get("Env") or [] if "=" in item)
        return cls(entrypoint=tuple(body.get("Entrypoint") or ()),
                   cmd=tuple(body.get("Cmd") or ()), env=env,  # type: ignore[arg-type]
                   workdir=body.get("WorkingDir") or "/")

    def argv(self, command: tuple[str, ...] | None = None) -> tuple[str, ...]:
        """ENTRYPOINT + (the function's ImageConfig.Command, else the image's CMD)."""
        argv = (*self.entrypoint, *(command if command else self.cmd))
        if not argv:
            raise ImageRunError("the image has neither an ENTRYPOINT nor a CMD")
        return argv


class ImageRoot:
    """One working container of *image*, mounted at :attr:`path` until :meth:`close`."""

    def __init__(self, image: str, function: str) -> None:
        self.image = image
        self.name = f"lambda-{function}-{os.getpid()}-r{next(_ROOTS)}"
        self._function = function
        self.path: Path | None = None

    def open(self) -> Self:
        remove_stale_roots(self._function)
        _buildah("rm", self.name, check=False)  # one of this process's, from an earlier pool
        _buildah("from", "--quiet", "--pull-never", "--name", self.name, self.image)
        try:
            self.path = Path(_buildah("mount", self.name).stdout.strip())
        except ImageRunError:
            _buildah("rm", self.name, check=False)
            raise
        log.info("image_root_mounted", image=self.image, container=self.name,
                 path=str(self.path))
        return self

    def close(self) -> None:
        if self.path is None:
            return
        self.path = None
        _buildah("umount", self.name, check=False)
        _buildah("rm", self.name, check=False)

    def __enter__(self) -> Self:
        return self.open()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def with_files(image: str, files: Mapping[str, Path], *,
               repository: str = "localhost/face-recognition-with") -> str:
    """*image* plus one layer holding *files* (image path → host file), as a user's
    ``COPY encoding /opt/gallery/encoding`` would add it; cached by a hash of the image and the
    files' contents."""
    digest = hashlib.sha256(image.encode())
    for dest, src in sorted(files.items()):
        digest.update(dest.encode() + b"\0" + Path(src).read_bytes())
    name = f"{repository}:{digest.hexdigest()[:12]}"
    if _buildah("inspect", "--type", "image", name, check=False).returncode == 0:
        return name
    container = _buildah("from", "--quiet", "--pull-never", image).stdout.strip()
    try:
        for dest, src in sorted(files.items()):
            _buildah("copy", "--quiet", "--chmod", "0644", container, str(src), dest)
        _buildah("commit", "--quiet", "--rm", container, name)
    except BaseException:
        _buildah("rm", container, check=False)
        raise
    log.info("image_with_files_built", image=name, base=image, files=sorted(files))
    return name


#: Lambda names an image by URI; this service also takes an OCI archive a build elsewhere wrote
#: (``buildah push IMAGE oci-archive:/path/fr.tar``, ``docker save`` in OCI layout, …)
OCI_ARCHIVE = "oci-archive:"


def import_archive(uri: str) -> str:
    """The image of the OCI archive *uri* (``oci-archive:PATH``) in this host's container
    storage, imported when it is not there yet (layers already stored are not copied again);
    returns its image ID. ImageRunError when the file is missing or is not an OCI archive."""
    path = Path(uri[len(OCI_ARCHIVE):])
    if not path.is_absolute() or not path.is_file():
        raise ImageRunError(f"{uri}: no such archive (an absolute path on this host)")
    image_id = _buildah("pull", "--quiet", f"{OCI_ARCHIVE}{path}").stdout.strip().splitlines()
    if not image_id:
        raise ImageRunError(f"{uri}: buildah imported no image")
    log.info("image_archive_imported", archive=str(path), image=image_id[-1])
    return image_id[-1]


def remove_stale_roots(function: str) -> list[str]:
    """Remove the working containers of *function* whose endpoint process is gone."""
    out = _buildah("containers", "--format", "{{.ContainerName}}", check=False).stdout
    removed = []
    for name in out.split():
        match = _OWNED.match(name)
        if not match or match["function"] != function:
            continue
        if Path(f"/proc/{match['pid']}").exists():
            continue
        with contextlib.suppress(ImageRunError):
            _buildah("umount", name, check=False)
            _buildah("rm", name)
            removed.append(name)
    if removed:
        log.info("image_roots_removed", containers=removed)
    return removed


def _buildah(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    try:
        proc = subprocess.run(["buildah", *args], capture_output=True, text=True, check=False)
    except FileNotFoundError as exc:
        raise ImageRunError("buildah is not installed (make image-tools installs it)") from exc
    if check and proc.returncode != 0:
        raise ImageRunError(f"buildah {' '.join(args[:2])}: {proc.stderr.strip()[-500:]}")
    return proc
