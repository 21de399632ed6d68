"""What the web tier does with an upload: an image is stored, recognised on the placement's
targets and answered (its answer stored too); a video is stored for the daemon's path, and its
result read back from the output bucket.

An image's answer (``Accept: application/json``)::

    {"stem": "test_00", "result": "president_obama", "people": [{"name", "major", "year"}],
     "faces": [...], "embedder": "dlib", "target": "private",
     "input": {"bucket", "key"}, "output": {"bucket", "key"},
     "timings_ms": {"upload", "placement", "recognition", "store", "total"}, "function": {...}}

``result`` is the frame function's: the most prominent face's name (the largest), or
``unknown_person`` / ``no_persons_found`` — the course's plain answer is ``<stem>:<result>``.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import time
import uuid
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any, TypeVar

import structlog
from botocore.exceptions import ClientError

from openstack_handler.daemon.errors import (
    FunctionFailed,
    InvokeFailed,
    InvokeUnavailable,
)
from openstack_handler.web.dispatch import Dispatcher
from openstack_handler.web.uploads import (
    IMAGE,
    VIDEO,
    Upload,
    UploadRejected,
    describe,
    object_key,
    safe_stem,
    sniff,
)

log = structlog.get_logger(__name__)
T = TypeVar("T")
_MISSING = {"NoSuchKey", "404", "NotFound"}


class RecognitionUnavailable(Exception):
    """No target could run the function (502/503 to the client; nothing is lost: the image is
    stored and may be sent again)."""


@dataclass(frozen=True)
class VideoResult:
    """A video's state as the web tier can see it: ``people`` None while there is no result."""

    key: str
    uploaded: bool
    people: list[dict[str, str]] | None = None
    csv: str | None = None


class Recognition:
    """The web tier's work, given its S3 client and its :class:`Dispatcher`."""

    def __init__(self, *, s3: Any, dispatcher: Dispatcher, input_bucket: str,
                 output_bucket: str, recent: int = 20, s3_threads: int = 16) -> None:
        self.s3 = s3
        self.dispatcher = dispatcher
        self.input_bucket = input_bucket
        self.output_bucket = output_bucket
        self.recent: deque[dict[str, Any]] = deque(maxlen=recent)
        self._io = ThreadPoolExecutor(max_workers=s3_threads, thread_name_prefix="s3")

    def close(self) -> None:
        self._io.shutdown(wait=True, cancel_futures=True)

    async def _blocking(self, call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._io, lambda: call(*args, **kwargs))

    # -- images: the course's contract ------------------------------------------------------

    async def recognise_image(self, upload: Upload) -> dict[str, Any]:
        """Store, recognise and answer one image. Raises UploadRejected (4xx: nothing kept),
        Busy (503) or RecognitionUnavailable."""
        started = time.perf_counter()
        data, filename = upload.data, upload.filename
        sniffed = sniff(data)
        if sniffed is None:
            raise UploadRejected(f"inputFile is not an image: {describe(data)}")
        if sniffed.kind == VIDEO:
            raise UploadRejected("inputFile is a video: POST videos to /videos (the daemon's "
                                 "path), images to /")
        self.dispatcher.check_room()  # a request that would be refused costs no upload
        key = object_key(filename, sniffed)
        stem = safe_stem(filename)
        request_id = str(uuid.uuid4())
        await self._blocking(self.s3.put_object, Bucket=self.input_bucket, Key=key, Body=data,
                             ContentType=sniffed.media_type)
        upload.data = data = b""  # in S3 now: the function reads it there, the line holds none
        stored = time.perf_counter()
        payload = {"version": "2.0", "rawPath": "/", "rawQueryString": "",
                   "requestContext": {"http": {"method": "GET", "path": "/"},
                                      "requestId": request_id},
                   "queryStringParameters": {"bucket": self.input_bucket, "key": key,
                                             "request_id": request_id, "filename": key}}
        try:
            dispatched = await self.dispatcher.invoke(payload)
        except (InvokeUnavailable, InvokeFailed, FunctionFailed) as exc:
            raise RecognitionUnavailable(f"recognition failed: {exc}") from exc
        recognised = time.perf_counter()
        response = dispatched.invoked.result if isinstance(dispatched.invoked.result, dict) \
            else {}
        status = int(response.get("statusCode") or 502)
        try:
            answer = json.loads(response.get("body") or "{}")
        except ValueError as exc:
            raise RecognitionUnavailable(f"the function's answer is not JSON: {exc}") from exc
        if status in (400, 413):
            # the function could not use it (a truncated image, say): nothing of it is kept
            # (its 403 or 404 — it may not read the bucket — is a deployment's fault, below)
            await self._blocking(self.s3.delete_object, Bucket=self.input_bucket, Key=key)
            error = answer.get("error") or {}
            raise UploadRejected(f"inputFile is not a usable image: {error.get('reason')}",
                                 status=413 if error.get("type") == "ImageTooLarge" else 400)
        if status != 200 or "result" not in answer:
            raise RecognitionUnavailable(f"the function answered {status}: "
                                         f"{str(answer)[:300]}")
        name = str(answer["result"])
        await self._blocking(self.s3.put_object, Bucket=self.output_bucket, Key=stem,
                             Body=name.encode(), ContentType="text/plain; charset=utf-8")
        done = time.perf_counter()
        timings = {"upload": (stored - started) * 1000, "placement": dispatched.waited_ms,
                   "recognition": (recognised - stored) * 1000 - dispatched.waited_ms,
                   "store": (done - recognised) * 1000, "total": (done - started) * 1000}
        result = {"stem": stem, "result": name, "people": answer.get("people", []),
                  "faces": answer.get("faces", []), "embedder": answer.get("embedder"),
                  "target": dispatched.target,
                  "input": {"bucket": self.input_bucket, "key": key},
                  "output": {"bucket": self.output_bucket, "key": stem},
                  "timings_ms": {k: round(v, 2) for k, v in timings.items()},
                  "function": {"request_id": request_id,
                               "timings_ms": answer.get("timings_ms", {})}}
        self.recent.appendleft({"kind": IMAGE, "name": key, "result": name,
                                "people": result["people"], "target": dispatched.target,
                                "at": time.time()})
        log.info("web.image_answered", key=key, result=name, target=dispatched.target,
                 total_ms=result["timings_ms"]["total"])
        return result

    # -- videos: into the daemon's path -----------------------------------------------------

    async def accept_video(self, upload: Upload) -> str:
        """Store a video in the input bucket (its notification starts the daemon's path);
        returns its key."""
        data, filename = upload.data, upload.filename
        sniffed = sniff(data)
        if sniffed is None or sniffed.kind != VIDEO:
            what = "an image: POST images to /" if sniffed is not None else describe(data)
            raise UploadRejected(f"inputFile is not a video: {what}")
        key = object_key(filename, sniffed)
        await self._blocking(self.s3.put_object, Bucket=self.input_bucket, Key=key, Body=data,
                             ContentType=sniffed.media_type)
        log.info("web.video_accepted", key=key, bytes=len(data))
        return key

    async def video_result(self, key: str) -> VideoResult:
        """The video's result CSV from the output bucket (the function writes it), if any."""
        out_key = csv_key(key)
        try:
            obj = await self._blocking(self.s3.get_object, Bucket=self.output_bucket,
                                       Key=out_key)
        except ClientError as exc:
            if str(exc.response.get("Error", {}).get("Code")) not in _MISSING:
                raise
        else:
            text = (await self._blocking(obj["Body"].read)).decode("utf-8", "replace")
            people = [{"name": r[0], "major": r[1] if len(r) > 1 else "",
                       "year": r[2] if len(r) > 2 else ""}
                      for r in csv.reader(io.StringIO(text)) if r]
            if not any(r["kind"] == VIDEO and r["name"] == key for r in self.recent):
                self.recent.appendleft({"kind": VIDEO, "name": key, "people": people,
                                        "result": ", ".join(p["name"] for p in people),
                                        "at": time.time()})
            return VideoResult(key, True, people, text)
        try:
            await self._blocking(self.s3.head_object, Bucket=self.input_bucket, Key=key)
        except ClientError as exc:
            if str(exc.response.get("Error", {}).get("Code")) not in _MISSING:
                raise
            return VideoResult(key, False)
        return VideoResult(key, True)


def csv_key(key: str) -> str:
    """The result CSV's key for a video (docs/contracts.md: the key, its extension ``.csv``)."""
    path = PurePosixPath(key)
    return str(path.with_suffix(".csv")) if path.suffix else key + ".csv"
