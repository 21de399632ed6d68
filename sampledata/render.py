"""Render short H.264 clips from still photos (or from nothing) with PyAV."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import av
import numpy as np
from PIL import Image


def render_still_clip(out: Path, images: Sequence[Path], *, size: tuple[int, int] = (640, 480),
                      seconds: float = 1.0, fps: int = 24) -> Path:
    """Place *images* side by side on one canvas and film them with a slow zoom.

    The zoom makes every frame different, as in a real clip, so nothing can cache on frame identity.
    """
    width, height = size
    canvas = _compose(images, size)
    frames = max(1, round(seconds * fps))
    with av.open(str(out), mode="w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for index in range(frames):
            zoom = 1.0 + 0.06 * index / max(1, frames - 1)
            crop_w, crop_h = width / zoom, height / zoom
            left, top = (width - crop_w) / 2, (height - crop_h) / 2
            frame_img = canvas.resize(size, Image.Resampling.LANCZOS,
                                      box=(left, top, left + crop_w, top + crop_h))
            _encode(container, stream, av.VideoFrame.from_image(frame_img))
        _encode(container, stream, None)
    return out


def render_faceless_clip(out: Path, *, size: tuple[int, int] = (640, 480), seconds: float = 1.0,
                         fps: int = 24) -> Path:
    """A clip of moving colour gradients and shapes: plenty of texture, no face."""
    width, height = size
    frames = max(1, round(seconds * fps))
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    with av.open(str(out), mode="w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for index in range(frames):
            phase = index / fps
            rgb = np.stack([
                127 + 120 * np.sin(xs / 37.0 + phase * 3),
                127 + 120 * np.sin(ys / 23.0 - phase * 2),
                127 + 120 * np.sin((xs + ys) / 51.0 + phase),
            ], axis=-1).astype(np.uint8)
            cx = int(width * (0.2 + 0.6 * index / max(1, frames - 1)))
            rgb[height // 3: height // 3 + 60, max(0, cx - 40): cx + 40] = (30, 200, 60)
            _encode(container, stream, av.VideoFrame.from_ndarray(rgb, format="rgb24"))
        _encode(container, stream, None)
    return out


def _compose(images: Sequence[Path], size: tuple[int, int]) -> Image.Image:
    width, height = size
    canvas = Image.new("RGB", size, (40, 40, 48))
    if not images:
        return canvas
    slot_w = width // len(images)
    for slot, path in enumerate(images):
        with Image.open(path) as img:
            photo = img.convert("RGB")
        scale = min(slot_w * 0.95 / photo.width, height * 0.9 / photo.height)
        photo = photo.resize((max(1, int(photo.width * scale)), max(1, int(photo.height * scale))),
                             Image.Resampling.LANCZOS)
        left = slot * slot_w + (slot_w - photo.width) // 2
        canvas.paste(photo, (left, (height - photo.height) // 2))
    return canvas


def _encode(container: av.container.OutputContainer, stream: av.video.stream.VideoStream,
            frame: av.VideoFrame | None) -> None:
    for packet in stream.encode(frame):
        container.mux(packet)
