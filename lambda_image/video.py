"""Frame sampling with PyAV: the first frame first, then evenly spaced frames on demand, capped.

The caller pulls frames from `sample_frames()` and stops pulling as soon as it has a confident
answer, so a clip that is recognised on its first frame costs one decoded frame.

A still image is not a video, even though FFmpeg opens one as a one-frame stream: a JPEG, PNG,
BMP, WebP, TIFF (any of FFmpeg's image demuxers) or a GIF with a single frame raises
:class:`NotAVideo` here. Single frames belong on the frame path (``frame_handler``); an animated
GIF moves, and is sampled like any other video.
"""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import structlog
from PIL import Image

from lambda_image.errors import InvalidVideo, NotAVideo

log = structlog.get_logger()

#: Seek instead of decoding forward when the next sample lies further ahead than this.
SEEK_GAP_S = 1.0


@dataclass(frozen=True)
class Frame:
    """One sampled frame: full resolution for embedding, a downscaled copy for detection."""

    index: int  # frame number in the stream (0 = first frame)
    time_s: float
    rgb: np.ndarray  # H×W×3 uint8, C-contiguous, rotation applied
    small: Image.Image  # area-downscaled copy for the detector
    scale: float  # small = rgb × scale


def rotate_k(rotation: float) -> int:
    """Quarter turns for np.rot90 (counter-clockwise) that undo a display-matrix `rotation`.

    PyAV's `VideoFrame.rotation` is the counter-clockwise angle the display matrix applies; a
    phone clip shot in portrait has -90 (ffmpeg's `autorotate` turns it 90° clockwise).
    """
    return round(rotation / 90.0) % 4


def to_frame(frame: av.VideoFrame, index: int, *, detect_max_side: int) -> Frame:
    """Convert a decoded frame: RGB at full resolution, plus an AREA-filtered detection copy."""
    rotation = float(getattr(frame, "rotation", 0) or 0)
    k = rotate_k(rotation)
    width, height = frame.width, frame.height
    scale = min(1.0, detect_max_side / max(width, height))
    small_w, small_h = max(1, round(width * scale)), max(1, round(height * scale))
    # Bilinear downscaling loses small faces (see the data README): use swscale's AREA filter.
    small = frame.reformat(width=small_w, height=small_h, format="rgb24",
                           interpolation="AREA").to_ndarray()
    rgb = frame.to_ndarray(format="rgb24")
    if k:
        rgb, small = np.rot90(rgb, k), np.rot90(small, k)
    return Frame(index=index, time_s=float(frame.time or 0.0),
                 rgb=np.ascontiguousarray(rgb),  # PyAV may hand back strided arrays
                 small=Image.fromarray(np.ascontiguousarray(small)), scale=scale)


def open_container(source: Path | str | bytes) -> av.container.InputContainer:
    """Open a media container; anything PyAV cannot open is an InvalidVideo."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        if len(source) == 0:
            raise InvalidVideo("empty file")
        target: object = io.BytesIO(source)
    else:
        if Path(source).stat().st_size == 0:
            raise InvalidVideo("empty file")
        target = str(source)
    try:
        # avformat_find_stream_info would decode the first frame just to probe it (as costly as
        # the real decode); MP4 headers already carry what we need, so the probe decoder skips.
        container = av.open(target, mode="r", options={"skip_frame": "all"})
    except (av.FFmpegError, ValueError, EOFError) as exc:
        raise InvalidVideo(f"not a readable media file: {exc}") from exc
    if not container.streams.video:
        container.close()
        raise InvalidVideo("no video stream")
    still = still_image_format(container)
    if still is not None:
        container.close()
        raise NotAVideo(f"a still image ({still}), not a video; send single frames to the "
                        f"frame handler")
    return container


def still_image_format(container: av.container.InputContainer) -> str | None:
    """The demuxer's name when *container* holds a still image rather than a video, else None.

    FFmpeg reads image files with ``image2`` (a file by name) or an ``<format>_pipe`` demuxer
    (``jpeg_pipe``, ``png_pipe``, … from bytes); a GIF counts as still when it has one frame.
    """
    name = container.format.name
    if name in ("image2", "image2pipe") or name.endswith("_pipe"):
        return name
    if name == "gif" and (container.streams.video[0].frames or 0) <= 1:
        return name
    return None


def sample_frames(source: Path | str | bytes, *, max_frames: int = 8, max_decode_s: float = 2.0,
                  detect_max_side: int = 400) -> Iterator[Frame]:
    """Yield the first frame, then up to `max_frames - 1` evenly spaced ones while pulled.

    Decoding stops at `max_frames` samples or after `max_decode_s` seconds of decode time. A file
    from which no frame at all can be decoded raises InvalidVideo; an error after at least one
    good frame ends the sampling with a warning (a truncated tail still has a usable head).
    """
    container = open_container(source)
    try:
        stream = container.streams.video[0]
        rate = float(stream.average_rate or stream.guessed_rate or 25)
        duration = _duration_s(container, stream)
        decode_s = 0.0
        yielded = 0
        targets = [duration * i / max_frames for i in range(max_frames)] if duration else [0.0]
        frames = container.decode(stream)
        last_time = -1.0
        position = 0
        rewind = False
        for target in targets:
            if yielded and decode_s >= max_decode_s:
                log.info("video.decode_budget_spent", frames=yielded, decode_s=round(decode_s, 3))
                break
            started = time.perf_counter()
            try:
                picked = None
                if not yielded:
                    picked = first_frame(container, stream)
                    rewind = True  # the demuxer is past the first packet now
                if picked is None and (rewind or target - last_time > SEEK_GAP_S):
                    to = target if target - last_time > SEEK_GAP_S else 0.0
                    container.seek(int(to / stream.time_base), stream=stream, backward=True)
                    frames = container.decode(stream)
                    rewind = False
                for frame in frames if picked is None else ():
                    position += 1
                    ftime = float(frame.time or 0.0)
                    if ftime > last_time and (ftime >= target - 0.5 / rate):
                        picked = frame
                        break
            except (av.FFmpegError, ValueError, EOFError) as exc:
                if not yielded:
                    raise InvalidVideo(f"no decodable frame: {exc}") from exc
                log.warning("video.decode_error_after_frames", frames=yielded, error=str(exc))
                break
            finally:
                decode_s += time.perf_counter() - started
            if picked is None:
                break
            last_time = float(picked.time or 0.0)
            index = round(last_time * rate) if picked.time is not None else position - 1
            yield to_frame(picked, index, detect_max_side=detect_max_side)
            yielded += 1
        if not yielded:
            raise InvalidVideo("no decodable video frame")
    finally:
        container.close()


def first_frame(container: av.container.InputContainer,
                stream: av.video.stream.VideoStream) -> av.VideoFrame | None:
    """The first frame, decoded from the first packet alone (None: fall back to plain decoding).

    H.264 with B-frames holds decoded pictures back for reordering (the course clips need three
    packets, i.e. three decoded pictures, before the first comes out). The first packet of a
    stream is its first keyframe, whose picture is displayed first, so draining the decoder right
    after it returns that picture having decoded one packet: 45 instead of 104 ms for the
    1080p test_1. The decoder is reset afterwards (flush_buffers), ready for a seek.
    """
    codec = stream.codec_context
    try:
        for packet in container.demux(stream):
            if packet.size == 0:
                continue
            if not packet.is_keyframe:
                return None
            decoded = codec.decode(packet) or codec.decode(None)
            if not decoded:
                return None
            frame = decoded[0]
            if frame.time_base is None:  # only stream-level decoding fills it in
                frame.time_base = stream.time_base
            return frame
        return None
    finally:
        codec.flush_buffers()


def _duration_s(container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> float:
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    if container.duration:
        return container.duration / av.time_base
    return 0.0
