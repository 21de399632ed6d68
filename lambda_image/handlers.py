"""Lambda entry points: `s3_handler` (S3 events, direct or via the daemon) and `frame_handler`
(Function URL single-frame requests). Models and AWS clients are built once per process: at
import when the function is configured (Lambda's init phase), otherwise on first use.
"""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import structlog

from lambda_image import logs
from lambda_image.config import FunctionSettings
from lambda_image.errors import ConfigError, InvalidInput
from lambda_image.events import S3Object, frame_request, s3_objects
from lambda_image.matching import NO_PERSONS
from lambda_image.outputs import SCHEMA, csv_key, person_rows, put_csv, render_csv, send_message
from lambda_image.recognize import RecognitionResult, Recognizer
from lambda_image.records import StudentRecords

log = structlog.get_logger()


@dataclass
class Runtime:
    """Per-process singletons: settings, the recognizer (models), boto3 clients."""

    settings: FunctionSettings
    recognizer: Recognizer
    s3: Any
    sqs: Any
    records: StudentRecords

    @classmethod
    def build(cls, settings: FunctionSettings | None = None) -> Runtime:
        import boto3

        settings = settings or FunctionSettings.from_env()
        logs.configure(json_lines=settings.log_json)
        recognizer = Recognizer.from_settings(settings)
        session = boto3.session.Session()
        _log_models(settings, recognizer)
        return cls(settings=settings, recognizer=recognizer,
                   s3=session.client("s3"), sqs=session.client("sqs"),
                   records=StudentRecords(session.client("dynamodb"), settings.students_table))


def _log_models(settings: FunctionSettings, recognizer: Recognizer) -> None:
    """One line at init: which runtime runs which models; and when the export holds no facenet
    network (an image built without vggface2 weights), that it serves dlib galleries only."""
    facenet = None
    if settings.inference_runtime == "onnx":
        from lambda_image import onnx_models

        facenet = onnx_models.ModelDir(settings.require_model_dir()).has(onnx_models.FACENET)
        if not facenet:
            log.info("function.dlib_only", model_dir=str(settings.model_dir),
                     reason="no facenet model in the export (built without vggface2 weights): "
                            "dlib galleries only")
    log.info("function.init", runtime=settings.inference_runtime,
             threads=settings.inference_threads, embedder=recognizer.embedder.name,
             gallery_entries=len(recognizer.gallery.names), facenet_model=facenet)


_runtime: Runtime | None = None
_runtime_lock = threading.Lock()


def runtime() -> Runtime:
    global _runtime
    if _runtime is None:
        with _runtime_lock:
            if _runtime is None:
                _runtime = Runtime.build()
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
            result = rt.recognizer.recognize(data)
        except InvalidInput as exc:
            log.warning("recognize.invalid_input", error=str(exc))
            total = (time.perf_counter() - started) * 1000
            return {**base, "status": "error", "people": [], "faces": [],
                    "embedder": rt.recognizer.embedder.name, "frames_sampled": 0,
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


# --- Function URL: one frame ----------------------------------------------------------------------

def frame_handler(event: Mapping[str, Any], context: Any = None) -> dict[str, Any]:
    """`{"content": base64 image, "request_id", "filename"}` → HTTP `{"request_id", "result"}`.

    `result` is the most prominent person's name (`unknown_person` / `no_persons_found`). The
    answer also goes to RESPONSE_QUEUE_URL when configured. A bad image is a 400, not an error.
    """
    rt = runtime()
    try:
        request = frame_request(event)
        result = rt.recognizer.recognize_image(request.content)
    except InvalidInput as exc:
        log.warning("frame.invalid_input", error=str(exc))
        body = {"request_id": _body_request_id(event), "error": {"type": type(exc).__name__,
                                                                 "reason": str(exc)}}
        return _http(400, body)
    answer = {"request_id": request.request_id or _request_id(context),
              "result": result.names[0] if result.names else NO_PERSONS}
    if rt.settings.response_queue_url:
        send_message(rt.sqs, rt.settings.response_queue_url, answer)
    log.info("frame.done", filename=request.filename, result=answer["result"],
             faces=len(result.faces))
    return _http(200, answer)


def _body_request_id(event: Mapping[str, Any]) -> str | None:
    try:
        body = json.loads(event["body"]) if isinstance(event.get("body"), str) else event
        return body.get("request_id")
    except (ValueError, KeyError, AttributeError):
        return None


def _http(status: int, body: Mapping[str, Any]) -> dict[str, Any]:
    return {"statusCode": status, "headers": {"Content-Type": "application/json"},
            "body": json.dumps(body), "isBase64Encoded": False}


# Lambda's init phase: a configured function (GALLERY_PATH set) builds its models and clients at
# import, so the first invocation of a fresh container, or of a warm local-endpoint worker, does
# not pay for them. Unconfigured imports (tests, the CLI) stay light and build on first use.
if os.environ.get("GALLERY_PATH"):
    runtime()
