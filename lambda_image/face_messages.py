"""The request-queue message of the two-stage camera path: what `detect_handler` found on a frame
and `recognize_handler` needs to name it.

One message per frame::

    {"schema": 1, "request_id": "...", "filename": "f.jpg", "reply_to": RESPONSE_QUEUE_URL,
     "camera_id": "pi-1", "sequence": 41,   # only when the request named its camera
     "sent_at_ms": 1700000000000.0, "image": {"width": 1280, "height": 720},
     "faces": [{"box": [x1, y1, x2, y2], "prob": 0.99, "landmarks": [[x, y] * 5],
                "crop": {"box": [left, top, right, bottom], "jpeg": base64}
                       | {"box": [...], "s3": {"bucket": B, "key": K}}}],
     "timings_ms": {"decode": ..., "detect": ..., "crop": ..., "total": ...}}

Boxes and landmarks are in the frame's pixels; `crop.box` is where the crop lies in the frame. A
crop spans `margin` face sides around the face's centre, which holds everything the embedders
look at (dlib's detector refinement searches 0.9 sides around it), so recognising the crop gives
what recognising the whole frame would, up to the JPEG. A message over SQS's 256 KB has its crops
moved to S3 (`spill`).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from lambda_image.camera_tracks import CameraFrame, camera_frame, describe
from lambda_image.detection import Detection
from lambda_image.errors import InvalidImage, InvalidRequest
from lambda_image.events import checked_filename, checked_request_id
from lambda_image.images import encode_jpeg

SCHEMA = 1

Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class FaceCrop:
    """One detected face and the crop around it."""

    detection: Detection  # in frame pixels
    crop_box: tuple[int, int, int, int]  # left, top, right, bottom in frame pixels
    jpeg: bytes

    def in_crop(self) -> Detection:
        """The detection in the crop's own pixels."""
        return shift(self.detection, self.crop_box[0], self.crop_box[1])


def shift(face: Detection, dx: float, dy: float) -> Detection:
    x1, y1, x2, y2 = face.box
    return Detection(box=(x1 - dx, y1 - dy, x2 - dx, y2 - dy), prob=face.prob,
                     landmarks=np.asarray(face.landmarks, dtype=np.float64) - (dx, dy))


def crop_box(box: Box, width: int, height: int, margin: float) -> tuple[int, int, int, int]:
    """The square `margin` face sides either side of the box's centre, clipped to the frame."""
    x1, y1, x2, y2 = box
    half = margin * max(x2 - x1, y2 - y1)
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    left, top = max(0, int(np.floor(cx - half))), max(0, int(np.floor(cy - half)))
    right = min(width, int(np.ceil(cx + half)))
    bottom = min(height, int(np.ceil(cy + half)))
    return left, top, max(right, left + 1), max(bottom, top + 1)


def crop_faces(rgb: np.ndarray, faces: Sequence[Detection], *, margin: float,
               quality: int) -> list[FaceCrop]:
    height, width = rgb.shape[:2]
    crops = []
    for face in faces:
        left, top, right, bottom = crop_box(face.box, width, height, margin)
        jpeg = encode_jpeg(np.ascontiguousarray(rgb[top:bottom, left:right]), quality=quality)
        crops.append(FaceCrop(face, (left, top, right, bottom), jpeg))
    return crops


def _rounded(values: Sequence[float], digits: int = 2) -> list[float]:
    return [round(float(v), digits) for v in values]


def request_message(*, request_id: str, filename: str | None, reply_to: str | None,
                    width: int, height: int, crops: Sequence[FaceCrop],
                    timings_ms: Mapping[str, float], sent_at_ms: float,
                    camera: CameraFrame | None = None) -> dict[str, Any]:
    """The message for the request queue, crops inline (see `spill`)."""
    return {
        "schema": SCHEMA, "request_id": request_id, "filename": filename, "reply_to": reply_to,
        **describe(camera),
        "sent_at_ms": round(sent_at_ms, 1), "image": {"width": width, "height": height},
        "faces": [{"box": _rounded(c.detection.box), "prob": round(c.detection.prob, 4),
                   "landmarks": [_rounded(p) for p in np.asarray(c.detection.landmarks)],
                   "crop": {"box": list(c.crop_box),
                            "jpeg": base64.b64encode(c.jpeg).decode("ascii")}}
                  for c in crops],
        "timings_ms": {k: round(v, 2) for k, v in timings_ms.items()},
    }


def encoded(message: Mapping[str, Any]) -> str:
    return json.dumps(message, separators=(",", ":"))


def spill(message: dict[str, Any], *, limit: int, bucket: str | None,
          put: Callable[[str, str, bytes], None]) -> dict[str, Any]:
    """The message as it can be sent: unchanged when within *limit* bytes, else with every crop
    put to S3 by ``put(bucket, key, jpeg)`` and referenced as ``{"s3": {"bucket", "key"}}``.

    Raises InvalidImage when even the references do not fit (a frame with hundreds of faces).
    """
    if len(encoded(message).encode()) <= limit:
        return message
    if not bucket:
        from lambda_image.errors import ConfigError

        raise ConfigError("FRAMES_BUCKET must be set to send crops over "
                          f"{limit} bytes through S3")
    faces = []
    for index, face in enumerate(message["faces"]):
        key = f"crops/{message['request_id']}/{index}.jpg"
        put(bucket, key, base64.b64decode(face["crop"]["jpeg"]))
        faces.append({**face, "crop": {"box": face["crop"]["box"],
                                       "s3": {"bucket": bucket, "key": key}}})
    spilled = {**message, "faces": faces}
    if len(encoded(spilled).encode()) > limit:
        raise InvalidImage(f"{len(faces)} faces do not fit one request message")
    return spilled


# -- the recognizer's side ---------------------------------------------------------------------

@dataclass(frozen=True)
class CropRef:
    """Where one face's crop is: inline JPEG bytes or an S3 object."""

    box: tuple[int, int, int, int]
    jpeg: bytes | None = None
    bucket: str | None = None
    key: str | None = None


@dataclass(frozen=True)
class FaceRequest:
    """One face of a request message: where it is on the frame, and its crop."""

    detection: Detection
    crop: CropRef

    def detection_in_crop(self) -> Detection:
        return shift(self.detection, self.crop.box[0], self.crop.box[1])


@dataclass(frozen=True)
class RequestMessage:
    """A parsed request-queue message (`parse` checks every field it uses)."""

    request_id: str
    filename: str | None
    reply_to: str | None
    sent_at_ms: float | None
    faces: tuple[FaceRequest, ...]
    timings_ms: Mapping[str, float]
    camera: CameraFrame | None = None


def _numbers(value: Any, count: int, what: str) -> list[float]:
    if (not isinstance(value, list) or len(value) != count
            or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)):
        raise InvalidRequest(f"{what} must be a list of {count} numbers")
    return [float(v) for v in value]


def _face(raw: Any, index: int) -> FaceRequest:
    if not isinstance(raw, Mapping):
        raise InvalidRequest(f"faces[{index}] must be an object")
    box = _numbers(raw.get("box"), 4, f"faces[{index}].box")
    landmarks = raw.get("landmarks")
    if not isinstance(landmarks, list) or len(landmarks) != 5:
        raise InvalidRequest(f"faces[{index}].landmarks must be 5 [x, y] points")
    points = [_numbers(p, 2, f"faces[{index}].landmarks[]") for p in landmarks]
    prob = raw.get("prob", 1.0)
    if not isinstance(prob, int | float) or isinstance(prob, bool):
        raise InvalidRequest(f"faces[{index}].prob must be a number")
    crop = raw.get("crop")
    if not isinstance(crop, Mapping):
        raise InvalidRequest(f"faces[{index}].crop must be an object")
    left, top, right, bottom = (int(v) for v in _numbers(crop.get("box"), 4,
                                                         f"faces[{index}].crop.box"))
    if right <= left or bottom <= top:
        raise InvalidRequest(f"faces[{index}].crop.box is empty")
    ref: CropRef
    if isinstance(crop.get("jpeg"), str):
        try:
            ref = CropRef((left, top, right, bottom),
                          jpeg=base64.b64decode(crop["jpeg"], validate=True))
        except (binascii.Error, ValueError) as exc:
            raise InvalidRequest(f"faces[{index}].crop.jpeg is not base64: {exc}") from exc
    elif isinstance(crop.get("s3"), Mapping) and all(
            isinstance(crop["s3"].get(k), str) and crop["s3"][k] for k in ("bucket", "key")):
        ref = CropRef((left, top, right, bottom), bucket=crop["s3"]["bucket"],
                      key=crop["s3"]["key"])
    else:
        raise InvalidRequest(f"faces[{index}].crop needs 'jpeg' (base64) or 's3' "
                             "{bucket, key}")
    detection = Detection(box=(box[0], box[1], box[2], box[3]), prob=float(prob),
                          landmarks=np.asarray(points, dtype=np.float64))
    return FaceRequest(detection, ref)


def parse(body: Any) -> RequestMessage:
    """The message in an SQS record's body; InvalidRequest names what is wrong with it."""
    if not isinstance(body, str):
        raise InvalidRequest("the record has no body")
    try:
        doc = json.loads(body)
    except ValueError as exc:
        raise InvalidRequest(f"the message body is not JSON: {exc}") from exc
    if not isinstance(doc, Mapping):
        raise InvalidRequest("the message body must be a JSON object")
    request_id = checked_request_id(doc.get("request_id"))
    if request_id is None:
        raise InvalidRequest("the message has no 'request_id'")
    if doc.get("schema") != SCHEMA:
        raise InvalidRequest(f"unknown message schema {doc.get('schema')!r} (expected {SCHEMA})")
    reply_to = doc.get("reply_to")
    if reply_to is not None and (not isinstance(reply_to, str) or not reply_to):
        raise InvalidRequest("'reply_to' must be a queue URL")
    faces = doc.get("faces")
    if not isinstance(faces, list):
        raise InvalidRequest("the message needs 'faces' (a list)")
    sent = doc.get("sent_at_ms")
    timings = doc.get("timings_ms") if isinstance(doc.get("timings_ms"), Mapping) else {}
    return RequestMessage(
        request_id=request_id, filename=checked_filename(doc.get("filename")), reply_to=reply_to,
        sent_at_ms=float(sent) if isinstance(sent, int | float) else None,
        faces=tuple(_face(f, i) for i, f in enumerate(faces)),
        timings_ms={k: float(v) for k, v in timings.items() if isinstance(v, int | float)},
        camera=camera_frame(doc.get("camera_id"), doc.get("sequence")))


def request_id_of(body: Any) -> str | None:
    """The message's request id when it can be read (for an error answer), else None."""
    try:
        doc = json.loads(body) if isinstance(body, str) else None
        return checked_request_id(doc.get("request_id")) if isinstance(doc, Mapping) else None
    except (ValueError, InvalidRequest):
        return None


def reply_to_of(body: Any) -> str | None:
    try:
        doc = json.loads(body) if isinstance(body, str) else None
    except ValueError:
        return None
    value = doc.get("reply_to") if isinstance(doc, Mapping) else None
    return value if isinstance(value, str) and value else None
