"""Lambda entry points (one image; CMD picks one):

- `s3_handler`: S3 events, direct or via the daemon (the video path);
- `frame_handler`: a camera frame through a Function URL, answered in one invocation;
- `detect_handler` and `recognize_handler`: the two-stage camera path — faces found on a frame
  behind a Function URL go to the request queue, whose SQS trigger names them onto the response
  queue (docs/contracts.md, "The camera path").

Models and AWS clients are built once per process: at import when the function is configured
(Lambda's init phase), otherwise on first use.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Mapping
from typing import Any

import structlog

from lambda_image import camera
from lambda_image.errors import ConfigError, InvalidInput
from lambda_image.events import S3Object, s3_objects
from lambda_image.matching import NO_PERSONS
from lambda_image.outputs import SCHEMA, csv_key, person_rows, put_csv, render_csv, send_message
from lambda_image.recognize import RecognitionResult
from lambda_image.runtime import Runtime

log = structlog.get_logger()


_runtime: Runtime | None = None
_runtime_lock = threading.RLock()


def _detect_only() -> bool:
    """Lambda's `_HANDLER` names the entry point this process serves: detect_handler needs the
    detector alone, so its sandbox does not load the embedder."""
    return os.environ.get("_HANDLER", "").replace(":", ".").endswith(".detect_handler")


def runtime() -> Runtime:
    global _runtime
    if _runtime is None:
        with _runtime_lock:
            if _runtime is None:
                _runtime = Runtime.build(recognition=not _detect_only())
    return _runtime


def reset_runtime() -> None:
    """Forget the singletons (tests change the environment between cases)."""
    global _runtime
    _runtime = None


def _request_id(context: Any) -> str:
    return getattr(context, "aws_request_id", None) or str(uuid.uuid4())


# --- S3 events ------------------------------------------------------------------------------------

def s3_handler(event: Mapping[str, Any], context: Any = None) -> dict[str, list[dict[str, Any]]]:
    """Recognise every object of an S3 notification; returns {"results": [message, ...]}.

    A bad input file gives an error result; AWS failures raise so that the caller retries.
    """
    rt = runtime()
    output_queue = event.get("reply_to") or rt.settings.output_queue_url
    if not output_queue or not rt.settings.output_bucket:
        raise ConfigError("OUTPUT_QUEUE_URL and OUTPUT_BUCKET must be set for S3 events")
    request_id = _request_id(context)
    results = []
    for obj in s3_objects(event):
        message = process_object(rt, obj, request_id=request_id)
        send_message(rt.sqs, output_queue, message)  # the returned value is exactly what was sent
        results.append(message)
    return {"results": results}


def process_object(rt: Runtime, obj: S3Object, *, request_id: str) -> dict[str, Any]:
    """Download, recognise, look up, write the CSV: the result message (not yet sent)."""
    bind = structlog.contextvars.bound_contextvars(bucket=obj.bucket, key=obj.key,
                                                  request_id=request_id)
    with bind:
        started = time.perf_counter()
        kwargs = {"VersionId": obj.version_id} if obj.version_id else {}
        data = rt.s3.get_object(Bucket=obj.bucket, Key=obj.key, **kwargs)["Body"].read()
        download_ms = (time.perf_counter() - started) * 1000
        base = {"schema": SCHEMA, "request_id": request_id, "bucket": obj.bucket, "key": obj.key,
                "etag": obj.etag, "version_id": obj.version_id}
        try:
            result = rt.recognition().recognize(data)
        except InvalidInput as exc:
            log.warning("recognize.invalid_input", error=str(exc))
            total = (time.perf_counter() - started) * 1000
            return {**base, "status": "error", "people": [], "faces": [],
                    "embedder": rt.recognition().embedder.name, "frames_sampled": 0,
                    "extra_frames": 0,
                    "timings_ms": {"download": round(download_ms, 2), "write": 0.0,
                                   "total": round(total, 2)},
                    "error": {"type": type(exc).__name__, "reason": str(exc)}}
        message = _ok_message(rt, base, result, obj.key, download_ms, started)
        log.info("recognize.done", people=[p["name"] for p in message["people"]],
                 total_ms=message["timings_ms"]["total"])
        return message


def _ok_message(rt: Runtime, base: dict[str, Any], result: RecognitionResult, key: str,
                download_ms: float, started: float) -> dict[str, Any]:
    t = time.perf_counter()
    known = [n for n in result.names if n not in (NO_PERSONS,)]
    records = rt.records.lookup(n for n in known if n != "unknown_person")
    lookup_ms = (time.perf_counter() - t) * 1000
    rows = person_rows(result.names, records)
    text = render_csv(rows)
    out_key = csv_key(key)
    t = time.perf_counter()
    put_csv(rt.s3, rt.settings.output_bucket, out_key, text)
    write_ms = (time.perf_counter() - t) * 1000
    timings = {"download": download_ms, **{k: result.timings_ms.get(k, 0.0)
                                            for k in ("decode", "detect", "embed")},
               "lookup": lookup_ms, "write": write_ms,
               "total": (time.perf_counter() - started) * 1000}
    return {**base, "status": "ok",
            "output": {"bucket": rt.settings.output_bucket, "key": out_key},
            "csv": text, "people": rows,
            "faces": [f.as_dict() for f in result.faces],
            "embedder": result.embedder, "frames_sampled": result.frames_sampled,
            "extra_frames": result.extra_frames,
            "timings_ms": {k: round(v, 2) for k, v in timings.items()}}


# --- the camera path (lambda_image.camera does the work) ---------------------------------------

def frame_handler(event: Mapping[str, Any], context: Any = None) -> dict[str, Any]:
    """Function URL (payload format 2.0): one frame, detected and recognised in this invocation.

    POST `{"content": base64 image, "request_id", "filename"}` or GET `?bucket=&key=` → HTTP 200
    with the answer `{"request_id", "result", "people", "faces", "timings_ms"}` (also sent to
    RESPONSE_QUEUE_URL when configured); a bad request is a 4xx `{"request_id", "error"}`.
    """
    return camera.answer_frame(runtime(), event, _request_id(context))


def detect_handler(event: Mapping[str, Any], context: Any = None) -> dict[str, Any]:
    """Function URL, first stage: the frame's faces go to REQUEST_QUEUE_URL (one message, crops
    spilled to FRAMES_BUCKET past 256 KB) → HTTP 200 `{"request_id", "faces"}`. A frame without a
    face is answered `no_persons_found` on the response queue at once."""
    return camera.detect_frame(runtime(), event, _request_id(context))


def recognize_handler(event: Mapping[str, Any], context: Any = None) -> dict[str, Any]:
    """SQS trigger, second stage: each record's faces are named and the answer sent to its
    `reply_to` (else RESPONSE_QUEUE_URL). Returns `{"batchItemFailures": [...]}` naming only the
    records whose answer could not be sent (they come back); a malformed record is answered
    with an error and not retried."""
    return camera.recognize_records(runtime(), event)


# Lambda's init phase: a configured function (GALLERY_PATH set) builds its models and clients at
# import, so the first invocation of a fresh container, or of a warm local-endpoint worker, does
# not pay for them. Unconfigured imports (tests, the CLI) stay light and build on first use.
if os.environ.get("GALLERY_PATH"):
    if _detect_only():
        runtime().face_detector()
    else:
        runtime()
