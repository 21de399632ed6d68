"""A camera's recent frames, so that a borderline face can be confirmed by the frames the same
camera sent just before it: lambda_image.confirm's rule, looking back instead of ahead.

A video is judged on the frames after the deciding one. A camera's frame is answered as it
arrives, so its evidence can only be the frames before it. A request that names its camera
(`camera_id`) and its place in that camera's stream (`sequence`: 0, 1, 2, ... in the order the
camera sent its frames) has its faces kept for a short while in a DynamoDB table (partition key
`camera_id`, sort key `sequence`, TTL attribute `expires_at`). A borderline face on frame N is
then named when `agree` of `window` frames (N, N-1, N-2, ...) show it nearest the same identity
within the threshold, the face tracked by box overlap. The track ends at a frame that is not in
the table: one with no face, one never sent or not yet answered, or one older than `max_age_s`
(a stream paused and resumed may show somebody else in the same place); and at a frame that shows
the face again as it is now (lambda_image.confirm.same_look: a face held still repeats its
embedding's error, so only a changed look is further evidence).

Functions are stateless and run in many environments at once, so the table is the one place
where every environment sees the camera's frames. Two frames of one camera judged at the same
moment do not see each other. The later one then stays `unknown_person`; it is never named
wrongly.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lambda_image import confirm
from lambda_image.config import DEFAULT_CAMERA_TRACK_MAX_AGE_S
from lambda_image.errors import InvalidRequest

if TYPE_CHECKING:
    from lambda_image.recognize import FaceResult

#: the longest camera id a request may carry (a DynamoDB partition key; it is logged)
MAX_CAMERA_ID_CHARS = 128
#: the largest sequence number: JSON's exact integers, which every client can send
MAX_SEQUENCE = 2**53 - 1
DEFAULT_TTL_S = 3600

CAMERA_KEY = "camera_id"
SEQUENCE_KEY = "sequence"
TTL_ATTRIBUTE = "expires_at"


@dataclass(frozen=True)
class CameraFrame:
    """Which camera sent a frame, and its number in that camera's stream."""

    camera_id: str
    sequence: int


def _sequence(value: Any, *, from_text: bool) -> int:
    if from_text and isinstance(value, str) and value.isdecimal() and value.isascii():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_SEQUENCE:
        raise InvalidRequest(f"'sequence' must be an integer 0..{MAX_SEQUENCE} (the frame's "
                             "number in its camera's stream)")
    return value


def camera_frame(camera_id: Any, sequence: Any, *, from_text: bool = False) -> CameraFrame | None:
    """The request's camera and sequence number, both or neither (None: a frame judged alone).

    *from_text*: the values come from a query string, so the sequence may be a decimal string.
    Raises InvalidRequest for one without the other or for values of the wrong kind.
    """
    if camera_id in (None, "") and sequence in (None, ""):
        return None
    if camera_id in (None, ""):
        raise InvalidRequest("'sequence' needs 'camera_id' (which camera's stream it numbers)")
    if sequence in (None, ""):
        raise InvalidRequest("'camera_id' needs 'sequence' (the frame's number in that camera's "
                             "stream: 0, 1, 2, ...)")
    if (not isinstance(camera_id, str) or len(camera_id) > MAX_CAMERA_ID_CHARS
            or not camera_id.isprintable()):
        raise InvalidRequest(f"'camera_id' must be a printable string of at most "
                             f"{MAX_CAMERA_ID_CHARS} characters")
    return CameraFrame(camera_id, _sequence(sequence, from_text=from_text))


def _finite(value: float) -> float | None:
    return round(value, 5) if math.isfinite(value) else None


def stored_faces(faces: Sequence[FaceResult]) -> list[dict[str, Any]]:
    """What the rule needs of each face later: its box and its two nearest identities."""
    kept = []
    for face in faces:
        identities = {face.nearest: _finite(face.distance)} if face.nearest else {}
        if face.runner_up:
            identities[face.runner_up] = _finite(face.runner_up_distance)
        kept.append({"box": list(face.box),
                     "identities": {k: v for k, v in identities.items() if v is not None}})
    return kept


def sightings(stored: Any) -> tuple[confirm.Sighting, ...]:
    """The faces of a kept frame as the rule follows them (an unreadable entry: none)."""
    try:
        faces = json.loads(stored) if isinstance(stored, str) else []
        return tuple(confirm.Sighting(
            box=(float(f["box"][0]), float(f["box"][1]), float(f["box"][2]),
                 float(f["box"][3])),
            identities={str(k): float(v) for k, v in f["identities"].items()})
            for f in faces)
    except (ValueError, TypeError, KeyError, IndexError, AttributeError):
        return ()


class CameraTracks:
    """The kept frames of every camera, in one DynamoDB table.

    AWS errors propagate, as the student records' do: the invocation fails and is retried.
    """

    def __init__(self, client: Any, table: str, *,
                 max_age_s: float = DEFAULT_CAMERA_TRACK_MAX_AGE_S, ttl_s: int = DEFAULT_TTL_S,
                 clock: Callable[[], float] = time.time) -> None:
        self._client = client
        self.table = table
        self.max_age_s = max_age_s
        self.ttl_s = ttl_s
        self._clock = clock

    def earlier(self, frame: CameraFrame, count: int) -> list[confirm.FrameFaces]:
        """Frames `sequence - 1` down to `sequence - count` of the camera, most recent first; a
        frame that is not kept, or is older than `max_age_s`, is there with no faces."""
        if count < 1 or frame.sequence == 0:
            return []
        first = max(0, frame.sequence - count)
        response = self._client.query(
            TableName=self.table, ConsistentRead=True,
            KeyConditionExpression="#camera = :camera AND #sequence BETWEEN :first AND :last",
            ExpressionAttributeNames={"#camera": CAMERA_KEY, "#sequence": SEQUENCE_KEY},
            ExpressionAttributeValues={":camera": {"S": frame.camera_id},
                                       ":first": {"N": str(first)},
                                       ":last": {"N": str(frame.sequence - 1)}})
        oldest_ms = (self._clock() - self.max_age_s) * 1000.0
        kept: dict[int, tuple[confirm.Sighting, ...]] = {}
        for item in response.get("Items", []):
            if float(item.get("seen_at_ms", {}).get("N", "0")) >= oldest_ms:
                kept[int(item[SEQUENCE_KEY]["N"])] = sightings(item.get("faces", {}).get("S"))
        return [confirm.FrameFaces(n, kept.get(n, ()))
                for n in range(frame.sequence - 1, first - 1, -1)]

    def keep(self, frame: CameraFrame, faces: Sequence[FaceResult]) -> None:
        """Remember this frame's faces for the camera's next frames (a frame without a face is
        not kept: it ends every track, as a missing frame does)."""
        if not faces:
            return
        now = self._clock()
        self._client.put_item(TableName=self.table, Item={
            CAMERA_KEY: {"S": frame.camera_id}, SEQUENCE_KEY: {"N": str(frame.sequence)},
            "faces": {"S": json.dumps(stored_faces(faces), separators=(",", ":"))},
            "seen_at_ms": {"N": str(round(now * 1000.0, 1))},
            TTL_ATTRIBUTE: {"N": str(int(now) + self.ttl_s)}})


def lookback(tracks: CameraTracks | None, frame: CameraFrame | None,
             ) -> Callable[[int], Sequence[confirm.FrameFaces]] | None:
    """What the recognizer calls, only for a borderline face, to read the camera's earlier
    frames (None: the frame is judged alone)."""
    if tracks is None or frame is None:
        return None
    return lambda count: tracks.earlier(frame, count)


def describe(frame: CameraFrame | None) -> Mapping[str, Any]:
    """The answer's echo of the request's camera fields."""
    return {} if frame is None else {"camera_id": frame.camera_id, "sequence": frame.sequence}
