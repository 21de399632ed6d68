"""Render short H.264 clips from still photos (or from nothing) with PyAV."""

from __future__ import annotations

import struct
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


def set_display_rotation(mp4: Path, degrees: int) -> Path:
    """Write a display matrix rotating the video by *degrees* (0/90/180/270) into the MP4's
    (first) track header, the way phones tag portrait clips; the pixels stay as stored."""
    cos_sin = {0: (1, 0), 90: (0, 1), 180: (-1, 0), 270: (0, -1)}
    if degrees not in cos_sin:
        raise ValueError(f"rotation must be one of {sorted(cos_sin)}, not {degrees}")
    c, s = cos_sin[degrees]
    data = bytearray(mp4.read_bytes())
    box = data.find(b"tkhd")
    if box < 0:
        raise ValueError(f"{mp4} has no track header")
    version = data[box + 4]
    # tkhd: version/flags 4, times+track id+reserved+duration 20 (v0) or 32 (v1), reserved 8,
    # layer 2, alternate group 2, volume 2, reserved 2, then the 3×3 matrix (16.16 / 2.30 fixed).
    offset = box + 4 + 4 + (32 if version == 1 else 20) + 8 + 8
    one, zero = 0x10000, 0
    matrix = (c * one, s * one, zero, -s * one, c * one, zero, zero, zero, 0x40000000)
    data[offset:offset + 36] = struct.pack(">9i", *matrix)
    mp4.write_bytes(bytes(data))
    return mp4
