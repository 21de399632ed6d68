"""The camera path's work, behind the entry points in lambda_image.handlers: one frame answered in
one invocation (`answer_frame`), or in two stages (`detect_frame` → request queue →
`recognize_records` → response queue). Every function here takes the process's Runtime.

The answer, over HTTP and on the response queue (docs/contracts.md, "The camera path")::

    {"schema": 1, "request_id": "...", "status": "ok", "result": "president_obama",
     "filename": "f.jpg", "people": [{"name", "major", "year"}], "faces": [...],
     "embedder": "dlib", "timings_ms": {...}, "answered_at_ms": 1700000000000.0}

`result` is exactly the string the course's clients compare: the most prominent person's name,
`unknown_person` or `no_persons_found`. Bad input is answered, never guessed at: over HTTP a 4xx
`{"request_id", "error": {"type", "reason"}}`; on the queue `{"request_id", "status": "error",
"error"}` (no `result`). One frame names a face whose evidence is
clear (lambda_image.confirm); a borderline one is `unknown_person` unless the frames its camera
sent just before it confirm it, when the request names its camera (`camera_id`, `sequence`:
lambda_image.camera_tracks): both paths judge it the same way.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import structlog

from lambda_image import camera_tracks, face_messages
from lambda_image.camera_tracks import CameraFrame
from lambda_image.errors import (
    ConfigError,
    ImageTooLarge,
    InvalidInput,
    InvalidRequest,
    ObjectForbidden,
    ObjectNotFound,
)
from lambda_image.events import FrameRequest, frame_request, request_id_of
from lambda_image.images import decode_image, still_frame
from lambda_image.matching import NO_PERSONS, UNKNOWN
from lambda_image.outputs import SCHEMA, person_rows, send_message
from lambda_image.recognize import RecognitionResult

if TYPE_CHECKING:
    from lambda_image.runtime import Runtime

log = structlog.get_logger()

_MISSING = {"NoSuchKey", "NoSuchBucket", "404", "NotFound"}
_FORBIDDEN = {"AccessDenied", "403", "AllAccessDisabled", "AccountProblem"}


def http(status: int, body: Mapping[str, Any]) -> dict[str, Any]:
    """A Function URL response (payload format 2.0)."""
    return {"statusCode": status, "headers": {"Content-Type": "application/json"},
            "body": json.dumps(body), "isBase64Encoded": False}


def rejected(event: Mapping[str, Any], exc: InvalidInput) -> dict[str, Any]:
    """The 4xx answer to a request the function cannot use; nothing is sent anywhere."""
    log.warning("frame.rejected", error_type=type(exc).__name__, error=str(exc),
                status=exc.http_status)
    return http(exc.http_status, {"request_id": request_id_of(event),
                                  "error": {"type": type(exc).__name__, "reason": str(exc)}})


def _now_ms() -> float:
    return time.time() * 1000.0


def _ms(since: float) -> float:
    return round((time.perf_counter() - since) * 1000.0, 2)


def frame_bytes(rt: Runtime, request: FrameRequest) -> bytes:
    """The frame's encoded bytes: the request's own, or its S3 object (GET form)."""
    if request.content is not None:
        return request.content
    from botocore.exceptions import ClientError, ParamValidationError

    where = f"s3://{request.bucket}/{request.key}"
    try:
        obj = rt.s3.get_object(Bucket=request.bucket, Key=request.key)
    except ParamValidationError as exc:
        raise InvalidRequest(f"{where} is not a valid S3 location: {exc}") from exc
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if code in _MISSING:
            raise ObjectNotFound(f"{where} does not exist ({code})") from exc
        if code in _FORBIDDEN:
            raise ObjectForbidden(f"{where} may not be read by this function ({code})") from exc
        raise  # S3 itself failed: an infrastructure error (502), the caller may retry
    body = obj["Body"]
    size = int(obj.get("ContentLength") or 0)
    if size > rt.settings.max_object_bytes:
        body.close()
        raise ImageTooLarge(f"{where} is {size} bytes, over the limit of "
                            f"{rt.settings.max_object_bytes}")
    return bytes(body.read())


def answer_message(rt: Runtime, request_id: str, filename: str | None,
                   result: RecognitionResult | None, timings_ms: dict[str, float],
                   camera: CameraFrame | None = None) -> dict[str, Any]:
    """The answer for a recognised frame (None: a frame without a face); records looked up."""
    names = result.names if result is not None else []
    started = time.perf_counter()
    known = [n for n in names if n not in (UNKNOWN, NO_PERSONS)]
    records = rt.records.lookup(known) if known else {}
    timings_ms["lookup"] = _ms(started)
    return {"schema": SCHEMA, "request_id": request_id, "status": "ok",
            "result": names[0] if names else NO_PERSONS, "filename": filename,
            **camera_tracks.describe(camera),
            "people": person_rows(names, records),
            "faces": [f.as_dict() for f in result.faces] if result is not None else [],
            "embedder": result.embedder if result is not None else None,
            "timings_ms": {k: round(v, 2) for k, v in timings_ms.items()},
            "answered_at_ms": round(_now_ms(), 1)}


def keep_frame(rt: Runtime, camera: CameraFrame | None, result: RecognitionResult,
               timings_ms: dict[str, float]) -> None:
    """Keep the frame's faces for its camera's next frames (before it is answered, so that a
    camera that waits for each answer always finds its last frame)."""
    if rt.tracks is None or camera is None:
        return
    started = time.perf_counter()
    rt.tracks.keep(camera, result.faces)
    timings_ms["track"] = _ms(started)


# -- single stage -----------------------------------------------------------------------------

def answer_frame(rt: Runtime, event: Mapping[str, Any], invocation_id: str) -> dict[str, Any]:
    """frame_handler: detect, embed, match and look up in one invocation."""
    started = time.perf_counter()
    try:
        request = frame_request(event)
        data = frame_bytes(rt, request)
        camera = request.camera
        result = rt.recognition().recognize_image(
            data, index=camera.sequence if camera else 0,
            earlier=camera_tracks.lookback(rt.tracks, camera))
    except InvalidInput as exc:
        return rejected(event, exc)
    request_id = request.request_id or invocation_id
    timings = {k: v for k, v in result.timings_ms.items() if k in ("decode", "detect", "embed")}
    keep_frame(rt, camera, result, timings)
    answer = answer_message(rt, request_id, request.filename, result, timings, camera)
    answer["timings_ms"]["total"] = _ms(started)
    if rt.settings.response_queue_url:
        send_message(rt.sqs, rt.settings.response_queue_url, answer)
    log.info("frame.answered", request_id=request_id, filename=request.filename,
             result=answer["result"], faces=len(result.faces),
             total_ms=answer["timings_ms"]["total"])
    return http(200, answer)


# -- two stages: detect ------------------------------------------------------------------------

def detect_frame(rt: Runtime, event: Mapping[str, Any], invocation_id: str) -> dict[str, Any]:
    """detect_handler: MTCNN on the frame; its faces (with crops) to the request queue."""
    started = time.perf_counter()
    settings = rt.settings
    if not settings.request_queue_url or not settings.response_queue_url:
        raise ConfigError("REQUEST_QUEUE_URL and RESPONSE_QUEUE_URL must be set for detection")
    try:
        request = frame_request(event)
        image = decode_image(frame_bytes(rt, request), max_pixels=settings.max_image_pixels)
    except InvalidInput as exc:
        return rejected(event, exc)
    request_id = request.request_id or invocation_id
    timings: dict[str, float] = {"decode": _ms(started)}
    frame = still_frame(image, detect_max_side=settings.detect_max_side)
    t = time.perf_counter()
    faces = rt.face_detector().detect(frame.small, scale=frame.scale)
    timings["detect"] = _ms(t)
    if not faces:  # nothing for the second stage: answer now (the course's bonus)
        answer = answer_message(rt, request_id, request.filename, None, timings, request.camera)
        answer["timings_ms"]["detect_stage"] = _ms(started)
        send_message(rt.sqs, settings.response_queue_url, answer)
        log.info("detect.no_face", request_id=request_id, filename=request.filename)
        return http(200, {"request_id": request_id, "faces": 0, "result": NO_PERSONS,
                          "timings_ms": answer["timings_ms"]})
    t = time.perf_counter()
    crops = face_messages.crop_faces(frame.rgb, faces, margin=settings.crop_margin,
                                     quality=settings.crop_quality)
    timings["crop"] = _ms(t)
    message = face_messages.request_message(
        request_id=request_id, filename=request.filename, reply_to=settings.response_queue_url,
        width=image.width, height=image.height, crops=crops, timings_ms=timings,
        sent_at_ms=0.0, camera=request.camera)
    try:
        message = face_messages.spill(
            message, limit=settings.max_message_bytes, bucket=settings.frames_bucket,
            put=lambda bucket, key, data: rt.s3.put_object(Bucket=bucket, Key=key, Body=data,
                                                           ContentType="image/jpeg"))
    except InvalidInput as exc:
        return rejected(event, exc)
    spilled = any("s3" in f["crop"] for f in message["faces"])
    message["timings_ms"]["detect_stage"] = _ms(started)
    message["sent_at_ms"] = round(_now_ms(), 1)
    send_message(rt.sqs, settings.request_queue_url, message)
    log.info("detect.queued", request_id=request_id, filename=request.filename, faces=len(faces),
             spilled=spilled, total_ms=message["timings_ms"]["detect_stage"])
    return http(200, {"request_id": request_id, "faces": len(faces),
                      "timings_ms": message["timings_ms"]})


# -- two stages: recognise ---------------------------------------------------------------------

def recognize_records(rt: Runtime, event: Mapping[str, Any]) -> dict[str, Any]:
    """recognize_handler: answer every record; report only the failed ones (partial batch)."""
    failures = []
    for record in event.get("Records") or []:
        message_id = record.get("messageId") if isinstance(record, Mapping) else None
        with structlog.contextvars.bound_contextvars(message_id=message_id):
            try:
                recognize_record(rt, record)
            except Exception:
                log.exception("recognize.record_failed")
                if not message_id:
                    raise  # nothing to name it by: the whole batch comes back
                failures.append({"itemIdentifier": message_id})
    return {"batchItemFailures": failures}


def _crop_pixels(rt: Runtime, face: face_messages.FaceRequest) -> np.ndarray:
    crop = face.crop
    data = crop.jpeg
    if data is None:
        from botocore.exceptions import ClientError

        try:
            data = rt.s3.get_object(Bucket=crop.bucket, Key=crop.key)["Body"].read()
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code == "NoSuchKey":
                raise InvalidRequest(f"the crop s3://{crop.bucket}/{crop.key} is gone") from exc
            raise
    rgb = np.asarray(decode_image(data, max_pixels=rt.settings.max_image_pixels))
    left, top, right, bottom = crop.box
    if rgb.shape[1] != right - left or rgb.shape[0] != bottom - top:
        raise InvalidRequest(f"a crop of {rgb.shape[1]}x{rgb.shape[0]} does not fit its box "
                             f"{list(crop.box)}")
    return np.ascontiguousarray(rgb)


def recognize_record(rt: Runtime, record: Mapping[str, Any]) -> None:
    """Name one request message's faces and send the answer; a malformed message is answered
    with an error instead. Infrastructure failures raise (the record is retried)."""
    picked_up = _now_ms()
    started = time.perf_counter()
    body = record.get("body")
    try:
        message = face_messages.parse(body)
        crops = [_crop_pixels(rt, face) for face in message.faces]
    except InvalidInput as exc:
        reply_to = face_messages.reply_to_of(body) or rt.settings.response_queue_url
        if not reply_to:
            raise ConfigError("RESPONSE_QUEUE_URL is not set") from exc
        request_id = face_messages.request_id_of(body)
        log.warning("recognize.malformed", request_id=request_id, error=str(exc))
        send_message(rt.sqs, reply_to, {
            "schema": SCHEMA, "request_id": request_id, "status": "error",
            "error": {"type": type(exc).__name__, "reason": str(exc)},
            "answered_at_ms": round(_now_ms(), 1)})
        return
    reply_to = message.reply_to or rt.settings.response_queue_url
    if not reply_to:
        raise ConfigError("the message has no reply_to and RESPONSE_QUEUE_URL is not set")
    timings: dict[str, float] = {"decode": _ms(started)}
    camera = message.camera
    result = rt.recognition().recognize_faces(
        [(pixels, face.detection_in_crop(), face.detection)
         for pixels, face in zip(crops, message.faces, strict=True)],
        index=camera.sequence if camera else 0,
        earlier=camera_tracks.lookback(rt.tracks, camera))
    timings["embed"] = result.timings_ms.get("embed", 0.0)
    keep_frame(rt, camera, result, timings)
    answer = answer_message(rt, message.request_id, message.filename, result, timings, camera)
    stage = {"detect_stage": message.timings_ms.get("detect_stage", 0.0),
             "queue_wait": (round(picked_up - message.sent_at_ms, 2)
                            if message.sent_at_ms else None)}
    answer["timings_ms"] = {**stage, **answer["timings_ms"], "recognize_stage": _ms(started)}
    send_message(rt.sqs, reply_to, answer)
    log.info("recognize.answered", request_id=message.request_id, result=answer["result"],
             faces=len(message.faces), total_ms=answer["timings_ms"]["recognize_stage"])
