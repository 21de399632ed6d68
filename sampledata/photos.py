"""Real face photos obtained from packages on PyPI (cached after the first fetch).

These machines reach PyPI and nothing else, so the photos come out of published distributions:
the `face_recognition` sdist's test images, matplotlib's sample data, scikit-image's data and
insightface's sample images.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class PhotoSource:
    """One photo: which distribution holds it and where inside the archive."""

    requirement: str
    member: str
    binary: bool  # a wheel (True) or a source distribution (False)
    # Head-and-shoulders framing as fractions (left, top, right, bottom) for full-length shots,
    # so the face is large enough once the photo is scaled into a clip.
    portrait: tuple[float, float, float, float] = (0.0, 0.0, 1.0, 1.0)


_FR = "face_recognition==1.3.0"
_FR_IMAGES = "face_recognition-1.3.0/tests/test_images"
_IF = "insightface==2.1"
SOURCES: dict[str, PhotoSource] = {
    "obama": PhotoSource(_FR, f"{_FR_IMAGES}/obama.jpg", binary=False),
    "obama2": PhotoSource(_FR, f"{_FR_IMAGES}/obama2.jpg", binary=False),
    "obama3": PhotoSource(_FR, f"{_FR_IMAGES}/obama3.jpg", binary=False,
                          portrait=(0.15, 0.0, 0.85, 0.45)),
    "biden": PhotoSource(_FR, f"{_FR_IMAGES}/biden.jpg", binary=False,
                         portrait=(0.0, 0.0, 1.0, 0.45)),
    "grace_hopper": PhotoSource(
        "matplotlib==3.10.7", "matplotlib/mpl-data/sample_data/grace_hopper.jpg", binary=True),
    "astronaut": PhotoSource("scikit-image==0.25.2", "skimage/data/astronaut.png", binary=True),
    # insightface's sample images: a portrait and a group of six, none of them in any gallery here
    "tom_hanks": PhotoSource(_IF, "insightface/data/images/Tom_Hanks_54745.png", binary=True),
    "group": PhotoSource(_IF, "insightface/data/images/t1.jpg", binary=True),
}


def default_cache_dir() -> Path:
    return Path(os.environ.get("SAMPLEDATA_CACHE", REPO / ".cache" / "sampledata"))


def fetch_photos(cache_dir: Path | None = None) -> dict[str, Path]:
    """Return every photo in SOURCES as a local file, downloading each distribution at most once."""
    cache = cache_dir or default_cache_dir()
    photos_dir = cache / "photos"
    photos_dir.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    for name, source in SOURCES.items():
        target = photos_dir / f"{name}{Path(source.member).suffix}"
        if not target.exists():
            archive = _download(source, cache / "dists")
            _extract_member(archive, source.member, target, source.portrait)
        paths[name] = target
    return paths


def _download(source: PhotoSource, dists_dir: Path) -> Path:
    dists_dir.mkdir(parents=True, exist_ok=True)
    project = source.requirement.split("==")[0].replace("-", "_").lower()
    existing = [p for p in dists_dir.iterdir() if p.name.lower().startswith(project)]
    if existing:
        return existing[0]
    format_flags = (
        ["--only-binary", ":all:", "--python-version", "3.11",
         "--platform", "manylinux_2_17_x86_64"]
        if source.binary else ["--no-binary", ":all:"]
    )
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", *format_flags,
         "--dest", str(dists_dir), source.requirement],
        check=True,
    )
    found = [p for p in dists_dir.iterdir() if p.name.lower().startswith(project)]
    if not found:
        raise FileNotFoundError(f"pip download of {source.requirement} produced no archive")
    return found[0]


def _extract_member(archive: Path, member: str, target: Path,
                    portrait: tuple[float, float, float, float]) -> None:
    if archive.suffix == ".whl":
        with zipfile.ZipFile(archive) as zf:
            data = zf.read(member)
    else:
        with tarfile.open(archive) as tf:
            extracted = tf.extractfile(member)
            if extracted is None:
                raise FileNotFoundError(f"{member} not in {archive.name}")
            data = extracted.read()
    tmp = target.with_name(target.name + ".part")
    if portrait == (0.0, 0.0, 1.0, 1.0):
        tmp.write_bytes(data)
    else:
        with Image.open(io.BytesIO(data)) as img:
            left, top, right, bottom = portrait
            box = (round(left * img.width), round(top * img.height),
                   round(right * img.width), round(bottom * img.height))
            img.crop(box).save(tmp, format=img.format)
    os.replace(tmp, target)
