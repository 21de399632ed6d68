"""The frames a camera sends: every Nth frame of a video (PyAV, as JPEG) or a folder's images."""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif")


@dataclass(frozen=True)
class Frame:
    """One frame to send: its file name, its encoded bytes, and what it was taken from (the
    video's or the image's stem, the key an expected-results file uses). `stream` groups the
    frames one camera took in order (a video's); None: a still, judged alone."""

    filename: str
    data: bytes
    source: str
    stream: str | None = None


def video_frames(path: Path, *, every: int = 15, quality: int = 90) -> Iterator[Frame]:
    """Every *every*-th frame of *path* (the first included) as a JPEG, as the Pi sent them."""
    import av

    if every < 1:
        raise ValueError("--every must be at least 1")
    with av.open(str(path)) as container:
        for index, frame in enumerate(container.decode(video=0)):
            if index % every:
                continue
            buffer = io.BytesIO()
            frame.to_image().save(buffer, format="JPEG", quality=quality)
            yield Frame(f"{path.stem}_{index:05d}.jpg", buffer.getvalue(), path.stem,
                        stream=path.stem)


def image_frames(folder: Path) -> Iterator[Frame]:
    """The images of *folder* (by name), as they are on disk."""
    for path in sorted(p for p in folder.iterdir()
                       if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES):
        yield Frame(path.name, path.read_bytes(), path.stem)
