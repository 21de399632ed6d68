"""Sending frames: `concurrency` senders, each one request at a time with `interval` seconds
between its requests, sharing one URL client and one response-queue poller."""

from __future__ import annotations

import base64
import itertools
import json
import statistics
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import Any

import structlog

from camera.answers import ResponseWaiter
from camera.expected import expected_for
from camera.frames import Frame
from camera.transport import UrlClient

log = structlog.get_logger()

#: the function's answer for a face it does not name (lambda_image.matching.UNKNOWN)
UNKNOWN = "unknown_person"


@dataclass(frozen=True)
class SendSettings:
    """What `camera send` was asked to do (built once from the command line)."""

    url: str
    response_queue_url: str | None = None  # given: two stages, the answer from the queue
    concurrency: int = 1
    interval_s: float = 0.0
    timeout_s: float = 30.0
    auth: str = "auto"
    duration_s: float | None = None  # repeat the frames until this long has passed
    s3_bucket: str | None = None  # put each frame here and GET ?bucket=&key= (the old client)
    region: str | None = None
    #: Name each frame's camera and its number in that camera's stream (camera_id, sequence),
    #: so that the function may confirm a borderline face by the frames before it. A video's
    #: frames are one camera's stream; still images only when `camera_id` is given.
    track: bool = True
    camera_id: str | None = None  # None: each video's name with a suffix new on every run


@dataclass
class FrameResult:
    """One request and what became of it."""

    frame: Frame
    request_id: str
    camera: tuple[str, int] | None = None  # (camera_id, sequence) as sent
    expected: str | None = None
    result: str | None = None
    error: str | None = None
    http_status: int | None = None
    latency_s: float | None = None
    retries: int = 0
    answer: dict[str, Any] | None = None
    ack: dict[str, Any] | None = None
    http_ms: float | None = None
    received_at_ms: float | None = None

    @property
    def completed(self) -> bool:
        return self.result is not None

    @property
    def correct(self) -> bool | None:
        """Against --expected: True the expected name; False another name, or unknown where
        nobody borderline was seen; None not compared, or `unconfirmed`."""
        if self.expected is None or not self.completed or self.unconfirmed:
            return None
        return self.result == self.expected

    @property
    def unconfirmed(self) -> bool:
        """`unknown_person` where the expected person is the nearest of a borderline face that
        the frames so far could not confirm: not yet named, never named wrongly."""
        return (self.expected is not None and self.result == UNKNOWN
                and self.expected in self.borderline_nearest())

    def borderline_nearest(self) -> list[str]:
        """Who is nearest each borderline face the function left unnamed (`unconfirmed`)."""
        faces = (self.answer or {}).get("faces") or []
        return [str(f.get("nearest")) for f in faces
                if isinstance(f, dict) and f.get("decision") == "unconfirmed"]

    def breakdown_ms(self) -> dict[str, float] | None:
        """Where a two-stage request's time went: the URL (HTTP round trip less the detect
        stage), detection, the queue pickup, recognition, the response poll."""
        if self.answer is None or self.ack is None or self.received_at_ms is None:
            return None
        timings = self.answer.get("timings_ms") or {}
        detect = float(timings.get("detect_stage") or 0.0)
        if "recognize_stage" not in timings:  # answered by the detect stage (no face)
            return None
        return {"url": round((self.http_ms or 0.0) - detect, 2), "detect": detect,
                "queue_pickup": float(timings.get("queue_wait") or 0.0),
                "recognize": float(timings["recognize_stage"]),
                "response_poll": round(self.received_at_ms
                                       - float(self.answer.get("answered_at_ms") or 0.0), 2)}

    def to_json(self) -> dict[str, Any]:
        return {"filename": self.frame.filename, "request_id": self.request_id,
                "camera_id": self.camera[0] if self.camera else None,
                "sequence": self.camera[1] if self.camera else None, "result": self.result,
                "expected": self.expected, "correct": self.correct,
                "unconfirmed": self.unconfirmed, "borderline_nearest": self.borderline_nearest(),
                "error": self.error, "http_status": self.http_status,
                "latency_s": self.latency_s, "retries": self.retries, "http_ms": self.http_ms,
                "breakdown_ms": self.breakdown_ms(),
                "timings_ms": (self.answer or {}).get("timings_ms")}


@dataclass
class RunReport:
    results: list[FrameResult]
    duration_s: float
    duplicates: int = 0
    released: int = 0
    signed: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def completed(self) -> list[FrameResult]:
        return [r for r in self.results if r.completed]

    @property
    def failed(self) -> list[FrameResult]:
        return [r for r in self.results if not r.completed]

    @property
    def correct(self) -> int:
        return sum(r.correct is True for r in self.results)

    @property
    def wrong(self) -> int:
        return sum(r.correct is False for r in self.results)

    @property
    def unconfirmed(self) -> int:
        return sum(r.unconfirmed for r in self.results)

    @property
    def ok(self) -> bool:
        return not self.failed and not self.wrong

    def latencies(self) -> list[float]:
        return sorted(r.latency_s for r in self.completed if r.latency_s is not None)

    def latency_stats(self) -> dict[str, float]:
        values = self.latencies()
        if not values:
            return {}

        def pct(p: float) -> float:
            return values[min(len(values) - 1, max(0, round(p * len(values) + 0.5) - 1))]

        return {"avg": statistics.fmean(values), "p50": pct(0.50), "p95": pct(0.95),
                "max": values[-1]}


def _frames_for(frames: list[Frame], duration_s: float | None) -> Iterator[Frame]:
    return itertools.cycle(frames) if duration_s else iter(frames)


#: the longest camera id the function takes (lambda_image.camera_tracks)
MAX_CAMERA_ID_CHARS = 128


def _printable(text: str, limit: int) -> str:
    """*text* as a camera id may hold it: printable characters only, at most *limit*."""
    return "".join(c for c in text if c.isprintable())[:limit]


class CameraNumbering:
    """Which camera each frame comes from and its number in that camera's stream, counted as
    the frames are handed to the senders (a repeated run of frames goes on counting)."""

    def __init__(self, settings: SendSettings, frames: list[Frame]) -> None:
        self._enabled = settings.track
        self._given = settings.camera_id
        self._several = len({f.stream for f in frames}) > 1
        self._run = uuid.uuid4().hex[:8]
        self._next: dict[str, int] = {}

    def camera_id(self, frame: Frame) -> str | None:
        if not self._enabled or (frame.stream is None and self._given is None):
            return None
        if self._given is None:
            return f"{_printable(frame.stream or '', MAX_CAMERA_ID_CHARS - 9)}-{self._run}"
        if self._several and frame.stream:
            return _printable(f"{self._given}/{frame.stream}", MAX_CAMERA_ID_CHARS)
        return self._given

    def number(self, frame: Frame) -> tuple[str, int] | None:
        """Not thread-safe: called under the senders' lock."""
        camera = self.camera_id(frame)
        if camera is None:
            return None
        sequence = self._next.get(camera, 0)
        self._next[camera] = sequence + 1
        return camera, sequence


def send_all(frames: Iterable[Frame], settings: SendSettings, *,
             expected: Mapping[str, str] | None = None, sqs: Any = None, s3: Any = None,
             on_result: Callable[[FrameResult], None] | None = None) -> RunReport:
    """Send every frame (or, with a duration, cycle them until it has passed)."""
    frames = list(frames)
    if not frames:
        raise ValueError("no frames to send")
    client = UrlClient(settings.url, auth=settings.auth, concurrency=settings.concurrency,
                       timeout_s=settings.timeout_s, region=settings.region)
    waiter = ResponseWaiter(sqs, settings.response_queue_url, patience_s=settings.timeout_s) \
        if settings.response_queue_url else None
    results: list[FrameResult] = []
    lock = threading.Lock()
    source = _frames_for(frames, settings.duration_s)
    numbering = CameraNumbering(settings, frames)
    started = time.monotonic()
    deadline = started + settings.duration_s if settings.duration_s else None
    Next = tuple[Frame, tuple[str, int] | None]

    def next_frame() -> Next | None:
        with lock:
            if deadline is not None and time.monotonic() >= deadline:
                return None
            frame = next(source, None)
            return None if frame is None else (frame, numbering.number(frame))

    def sender() -> None:
        job = next_frame()
        while job is not None:
            result = send_one(client, waiter, job[0], settings, expected or {}, s3,
                              camera=job[1])
            with lock:
                results.append(result)
            if on_result is not None:
                on_result(result)
            if settings.interval_s:
                time.sleep(settings.interval_s)
            job = next_frame()

    try:
        # the first request alone: with auth "auto" it settles whether to sign
        first = next_frame()
        if first is not None:
            result = send_one(client, waiter, first[0], settings, expected or {}, s3,
                              camera=first[1])
            results.append(result)
            if on_result is not None:
                on_result(result)
            if settings.interval_s:
                time.sleep(settings.interval_s)
        with ThreadPoolExecutor(max_workers=settings.concurrency,
                                thread_name_prefix="camera") as pool:
            for f in [pool.submit(sender) for _ in range(settings.concurrency)]:
                f.result()
    finally:
        if waiter is not None:
            waiter.close()
        client.close()
    return RunReport(results=results, duration_s=time.monotonic() - started,
                     duplicates=waiter.duplicates if waiter else 0,
                     released=waiter.released if waiter else 0, signed=client.signing)


def send_one(client: UrlClient, waiter: ResponseWaiter | None, frame: Frame,
             settings: SendSettings, expected: Mapping[str, str], s3: Any, *,
             camera: tuple[str, int] | None = None) -> FrameResult:
    """One frame: POST it (or put it in S3 and GET it), then its answer. *camera*: the
    frame's (camera_id, sequence), sent with it."""
    request_id = str(uuid.uuid4())
    result = FrameResult(frame=frame, request_id=request_id, camera=camera,
                         expected=expected_for(frame, expected))
    numbered: dict[str, Any] = {} if camera is None else {"camera_id": camera[0],
                                                          "sequence": camera[1]}
    future = waiter.expect(request_id) if waiter is not None else None
    started = time.perf_counter()
    try:
        if settings.s3_bucket:
            key = f"frames/{request_id}/{frame.filename}"
            s3.put_object(Bucket=settings.s3_bucket, Key=key, Body=frame.data)
            http = client.request("GET", query={"bucket": settings.s3_bucket, "key": key,
                                                "request_id": request_id,
                                                "filename": frame.filename,
                                                **{k: str(v) for k, v in numbered.items()}})
        else:
            body = json.dumps({"content": base64.b64encode(frame.data).decode("ascii"),
                               "request_id": request_id, "filename": frame.filename,
                               **numbered})
            http = client.request("POST", body=body.encode())
    except Exception as exc:  # noqa: BLE001 -- a request's boundary: reported, the run goes on
        result.error = f"{type(exc).__name__}: {exc}"
        if waiter is not None:
            waiter.forget(request_id)
        return result
    result.http_status, result.retries = http.status, http.retries
    result.http_ms = round(http.elapsed_ms, 2)
    reply = http.json()
    if http.status != 200:  # the course's clients count any other status as a failure
        reason = reply.get("error", {}).get("reason") if isinstance(reply, dict) and \
            isinstance(reply.get("error"), dict) else http.body[:200].decode(errors="replace")
        result.error = f"HTTP {http.status}: {reason}"
        if waiter is not None:
            waiter.forget(request_id)
        return result
    if future is None:  # one stage: the answer is the HTTP reply
        result.latency_s = round(time.perf_counter() - started, 4)
        _take_answer(result, reply)
        return result
    result.ack = reply if isinstance(reply, dict) else None
    try:
        queued = future.result(timeout=settings.timeout_s)
    except FutureTimeout:
        waiter.forget(request_id)  # type: ignore[union-attr]
        result.error = f"no answer on the response queue within {settings.timeout_s:g} s"
        return result
    result.latency_s = round(time.perf_counter() - started, 4)
    result.received_at_ms = queued.received_at_ms
    _take_answer(result, queued.body)
    return result


def _take_answer(result: FrameResult, answer: Any) -> None:
    if not isinstance(answer, dict):
        result.error = "the answer is not a JSON object"
        return
    result.answer = answer
    if answer.get("status") == "error" or "result" not in answer:
        error = answer.get("error") or {}
        result.error = f"{error.get('type', 'Error')}: {error.get('reason', 'no result')}"
        return
    result.result = str(answer["result"])
