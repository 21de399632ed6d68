"""Typed, read-only views of the S3 event notifications that arrive on the input queue.

The wrappers keep the raw dicts (the invocation payload is built from them unchanged) and decode
what needs decoding: S3 URL-encodes object keys with ``+`` for spaces (``a%2Fb+c.mp4``), so
keys go through :func:`urllib.parse.unquote_plus`. :func:`parse_input_message` never raises: every
body maps to one :class:`InputMessage` kind the consumer knows how to handle.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any
from urllib.parse import unquote_plus

from openstack_handler.daemon.errors import InvalidEvent

TEST_EVENT = "s3:TestEvent"
OBJECT_CREATED_PREFIX = "ObjectCreated:"
#: still images in the input bucket are the web tier's (the course's image service stores its
#: uploads there and answers them itself): not videos, so the daemon drops their events
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp")


def is_still_image(key: str) -> bool:
    """Whether *key* names a still image by its suffix (the web tier's uploads)."""
    return key.lower().endswith(IMAGE_SUFFIXES)


@dataclass(frozen=True)
class S3ObjectRef:
    """One S3 event record: which object version the event is about."""

    bucket: str
    key: str  # decoded
    etag: str
    size: int | None
    version_id: str | None
    event_name: str
    raw: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}), compare=False,
                                   repr=False)

    @property
    def identity(self) -> tuple[str, str, str]:
        """The de-duplication identity: (bucket, key, eTag)."""
        return (self.bucket, self.key, self.etag)

    @property
    def is_object_created(self) -> bool:
        return self.event_name.startswith(OBJECT_CREATED_PREFIX)

    @classmethod
    def from_record(cls, record: Any) -> S3ObjectRef:
        """Build from one ``Records[]`` entry; raise :class:`InvalidEvent` if it is malformed."""
        try:
            event_name = record["eventName"]
            s3 = record["s3"]
            bucket = s3["bucket"]["name"]
            obj = s3["object"]
            raw_key = obj["key"]
        except (KeyError, TypeError) as exc:
            raise InvalidEvent(f"S3 record lacks {exc}") from exc
        if not all(isinstance(v, str) and v for v in (event_name, bucket, raw_key)):
            raise InvalidEvent("S3 record has an empty or non-string eventName, bucket or key")
        size = obj.get("size")
        if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 0):
            raise InvalidEvent(f"S3 record has an invalid size {size!r}")
        etag = obj.get("eTag") or obj.get("etag") or ""
        if not isinstance(etag, str):
            raise InvalidEvent(f"S3 record has an invalid eTag {etag!r}")
        version_id = obj.get("versionId") or None
        return cls(bucket=bucket, key=unquote_plus(raw_key), etag=etag.strip('"'), size=size,
                   version_id=str(version_id) if version_id is not None else None,
                   event_name=event_name, raw=MappingProxyType(dict(record)))


class MessageKind(enum.Enum):
    """What an input-queue body turned out to be."""

    TEST_EVENT = "test_event"  #: s3:TestEvent, sent when a notification is configured: ack + drop
    INVALID = "invalid"  #: not JSON, not an S3 event, or a malformed record: left for the DLQ
    RECORDS = "records"  #: an S3 event with records (possibly none of them ObjectCreated)


@dataclass(frozen=True)
class InputMessage:
    """A parsed input-queue body."""

    kind: MessageKind
    objects: tuple[S3ObjectRef, ...] = ()  #: the ObjectCreated:* records
    skipped_events: tuple[str, ...] = ()  #: eventNames of the other records (dropped)
    reason: str | None = None  #: why the body is INVALID
    raw: Any = field(default=None, compare=False, repr=False)


def parse_input_message(body: str) -> InputMessage:
    """Classify and parse one SQS body. Never raises."""
    try:
        doc = json.loads(body)
    except (json.JSONDecodeError, TypeError) as exc:
        return InputMessage(MessageKind.INVALID, reason=f"body is not JSON: {exc}", raw=body)
    # S3 → SNS → SQS wraps the event in an SNS envelope (raw message delivery off).
    if (isinstance(doc, dict) and doc.get("Type") == "Notification"
            and isinstance(doc.get("Message"), str)):
        return parse_input_message(doc["Message"])
    if not isinstance(doc, dict):
        return InputMessage(MessageKind.INVALID, reason="body is JSON but not an object", raw=doc)
    if doc.get("Event") == TEST_EVENT:
        return InputMessage(MessageKind.TEST_EVENT, raw=doc)
    records = doc.get("Records")
    if not isinstance(records, list):
        return InputMessage(MessageKind.INVALID, reason="JSON object without a Records list",
                            raw=doc)
    created: list[S3ObjectRef] = []
    skipped: list[str] = []
    for index, record in enumerate(records):
        try:
            ref = S3ObjectRef.from_record(record)
        except InvalidEvent as exc:
            return InputMessage(MessageKind.INVALID, reason=f"record {index}: {exc}", raw=doc)
        if ref.is_object_created:
            created.append(ref)
        else:
            skipped.append(ref.event_name)
    return InputMessage(MessageKind.RECORDS, objects=tuple(created), skipped_events=tuple(skipped),
                        raw=doc)


def invocation_payload(objects: tuple[S3ObjectRef, ...] | list[S3ObjectRef]) -> dict[str, Any]:
    """The S3 event to invoke the function with: only the records the daemon accepted."""
    return {"Records": [dict(ref.raw) for ref in objects]}
