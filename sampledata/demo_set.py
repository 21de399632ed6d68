"""The built-in demo set: a small gallery, student records and clips made from real photos.

Known people are filmed from a photo that was *not* used to enrol them where the registries give
us two (Obama); one clip holds two known people, one an unknown person, one no face at all.
"""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from sampledata.photos import fetch_photos
from sampledata.render import render_faceless_clip, render_still_clip

STUDENTS = [
    {"id": 1, "name": "barack_obama", "major": "political_science", "year": "senior"},
    {"id": 2, "name": "joe_biden", "major": "history", "year": "junior"},
    {"id": 3, "name": "grace_hopper", "major": "computer_science", "year": "graduate"},
]
# person -> photos used to enrol them
ENROLMENT = {
    "barack_obama": ["obama", "obama2"],
    "joe_biden": ["biden"],
    "grace_hopper": ["grace_hopper"],
}


@dataclass(frozen=True)
class Clip:
    file_name: str
    photos: tuple[str, ...]  # empty: a clip without any face
    expected: tuple[str, ...]  # expected CSV names, most prominent first (order not checked)


CLIPS = (
    Clip("barack_obama.mp4", ("obama3",), ("barack_obama",)),
    Clip("joe_biden.mp4", ("biden",), ("joe_biden",)),
    Clip("grace_hopper.mp4", ("grace_hopper",), ("grace_hopper",)),
    Clip("two people.mp4", ("obama3", "biden"), ("barack_obama", "joe_biden")),
    Clip("astronaut (not enrolled).mp4", ("astronaut",), ("unknown_person",)),
    Clip("empty room.mp4", (), ("no_persons_found",)),
)


@dataclass(frozen=True)
class DemoSet:
    root: Path

    @property
    def videos(self) -> Path:
        return self.root / "videos"

    @property
    def gallery(self) -> Path:
        return self.root / "gallery.pkl"

    @property
    def students(self) -> Path:
        return self.root / "students.json"

    @property
    def expected(self) -> Path:
        return self.root / "expected.csv"


#: the code that shapes the demo set: this package renders the clips and writes the records,
#: lambda_image enrols the gallery.
_INPUTS = (Path(__file__).resolve().parent, Path(__file__).resolve().parents[1] / "lambda_image")


def inputs_digest() -> str:
    """Changes whenever code that shapes the demo set changes (a set built by older code is
    rebuilt rather than reused)."""
    digest = hashlib.sha256()
    for package in _INPUTS:
        for path in sorted(package.rglob("*.py")):
            digest.update(path.relative_to(package.parent).as_posix().encode() + b"\0")
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def build_demo_set(root: Path) -> DemoSet:
    """Build (or reuse) the demo set under *root*; the marker file, holding the digest of the
    code that made it, makes reruns free."""
    demo = DemoSet(root)
    marker = root / ".complete"
    digest = inputs_digest()
    if marker.is_file() and marker.read_text().strip() == digest:
        return demo
    if root.exists():
        shutil.rmtree(root)
    photos = fetch_photos()
    demo.videos.mkdir(parents=True)
    images_dir = root / "gallery_images"
    for person, names in ENROLMENT.items():
        (images_dir / person).mkdir(parents=True)
        for name in names:
            shutil.copy(photos[name], images_dir / person / photos[name].name)
    subprocess.run(
        [sys.executable, "-m", "lambda_image", "gallery", "enroll", "--embedder", "dlib",
         "--images", str(images_dir), "--out", str(demo.gallery)],
        check=True,
    )
    demo.students.write_text(json.dumps(STUDENTS, indent=2) + "\n")
    for clip in CLIPS:
        target = demo.videos / clip.file_name
        if clip.photos:
            size = (1280, 720) if len(clip.photos) > 1 else (640, 480)
            render_still_clip(target, [photos[p] for p in clip.photos], size=size)
        else:
            render_faceless_clip(target)
    with demo.expected.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["video", "names"])
        for clip in CLIPS:
            writer.writerow([clip.file_name, " ".join(clip.expected)])
    marker.write_text(digest + "\n")
    return demo
