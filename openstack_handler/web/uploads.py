"""What an upload is, before anything is stored: its kind from its first bytes (never from the
name or the client's Content-Type), a key made from its file name that is never a path, and a
limit on the request body enforced while it is read.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

IMAGE = "image"
VIDEO = "video"

#: kind, suffix and media type by the bytes a file starts with
_SIGNATURES: tuple[tuple[Callable[[bytes], bool], str, str, str], ...] = (
    (lambda b: b.startswith(b"\xff\xd8\xff"), IMAGE, ".jpg", "image/jpeg"),
    (lambda b: b.startswith(b"\x89PNG\r\n\x1a\n"), IMAGE, ".png", "image/png"),
    (lambda b: b[:4] == b"RIFF" and b[8:12] == b"WEBP", IMAGE, ".webp", "image/webp"),
    (lambda b: b.startswith(b"BM") and len(b) > 26, IMAGE, ".bmp", "image/bmp"),
    (lambda b: b[4:8] == b"ftyp" and b[8:10] == b"qt", VIDEO, ".mov", "video/quicktime"),
    (lambda b: b[4:8] == b"ftyp", VIDEO, ".mp4", "video/mp4"),
    (lambda b: b.startswith(b"\x1a\x45\xdf\xa3"), VIDEO, ".webm", "video/webm"),
    (lambda b: b[:4] == b"RIFF" and b[8:12] == b"AVI ", VIDEO, ".avi", "video/x-msvideo"),
)
#: suffixes a file of each kind may keep from its name
KEPT_SUFFIXES = {IMAGE: frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp"}),
                 VIDEO: frozenset({".mp4", ".mov", ".m4v", ".webm", ".mkv", ".avi"})}
MAX_STEM_CHARS = 100
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class Sniffed:
    kind: str
    suffix: str
    media_type: str


@dataclass
class Upload:
    """The ``inputFile`` part: its bytes (an image's are emptied once they are stored, so that
    a request waiting in line holds none of them) and the name the client gave it."""

    data: bytes
    filename: str | None


class UploadRejected(ValueError):
    """An upload the web tier will not store: answered with *status* and the reason."""

    def __init__(self, reason: str, *, status: int = 400) -> None:
        super().__init__(reason)
        self.status = status


def sniff(data: bytes) -> Sniffed | None:
    """The upload's kind by its first bytes; None: neither an image nor a video we know."""
    head = data[:32]
    for matches, kind, suffix, media_type in _SIGNATURES:
        if matches(head):
            return Sniffed(kind, suffix, media_type)
    return None


def describe(data: bytes) -> str:
    """A few words on what an unrecognised upload looks like, for the 400's reason."""
    if not data:
        return "the file is empty (0 bytes)"
    head = data[:512]
    try:
        head.decode("utf-8")
    except UnicodeDecodeError:
        return f"its first bytes ({data[:8].hex()}) are not a JPEG, PNG, WebP or BMP image"
    return "it is text, not an image"


def safe_stem(filename: str | None) -> str:
    """The course's ``<stem>``: the file's name without folders or its extension, reduced to
    ``[A-Za-z0-9._-]`` (at most 100 characters); ``upload`` when nothing is left. Whatever the
    client sent (``../``, NUL, 2 KB), the result is one plain name."""
    name = (filename or "").replace("\\", "/").rsplit("/", 1)[-1]
    # accents come off (Ü → U); control characters (NUL...) go
    name = unicodedata.normalize("NFKD", name)
    name = "".join(ch for ch in name if unicodedata.category(ch)[0] != "C"
                   and unicodedata.category(ch) != "Mn")
    stem = name.rsplit(".", 1)[0] if "." in name.lstrip(".") else name
    stem = _UNSAFE.sub("_", stem).strip("._-")[:MAX_STEM_CHARS].strip("._-")
    return stem or "upload"


def object_key(filename: str | None, sniffed: Sniffed) -> str:
    """The S3 key an upload is stored under: its safe stem and its own suffix when that suits
    its kind (``test_00.jpg`` stays ``test_00.jpg``), else the one its bytes say."""
    name = (filename or "").replace("\\", "/").rsplit("/", 1)[-1]
    given = "." + name.rsplit(".", 1)[1].lower() if "." in name.lstrip(".") else ""
    suffix = given if given in KEPT_SUFFIXES[sniffed.kind] else sniffed.suffix
    return safe_stem(filename) + suffix


Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[MutableMapping[str, Any], Receive, Send], Awaitable[None]]


class BodyTooLarge(Exception):
    """The request's body passed the limit while it was read."""


class BodyLimit:
    """ASGI middleware: a request body over *limit_bytes* is refused — at once from its
    Content-Length, else as soon as the bytes read pass it (:class:`BodyTooLarge` from
    ``receive``, which the app answers 413) — so an upload is never held whole past the limit.
    Before the 413 the rest of the body is read and dropped, up to ``drain_factor`` times the
    limit, so that a client still sending reads the answer instead of a connection reset (the
    server closes the connection once it has answered)."""

    def __init__(self, app: ASGIApp, *, limit_bytes: int, drain_factor: int = 4) -> None:
        self.app = app
        self.limit_bytes = limit_bytes
        self.drain_bytes = drain_factor * limit_bytes

    async def __call__(self, scope: MutableMapping[str, Any], receive: Receive,
                       send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit_bytes:
            if int(declared) <= self.drain_bytes:
                await self._drain(receive, 0)
            await _refuse(send, self.limit_bytes)
            return
        seen = 0
        #: the body passed the limit and more of it is still to come (to drain before the 413:
        #: once its last part has been read, another receive would wait for ever)
        unread = False

        async def limited() -> MutableMapping[str, Any]:
            nonlocal seen, unread
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit_bytes:
                    unread = bool(message.get("more_body"))
                    raise BodyTooLarge(f"the request body passed {self.limit_bytes} bytes")
            return message

        async def sending(message: MutableMapping[str, Any]) -> None:
            nonlocal unread
            if unread and message["type"] == "http.response.start":
                unread = False
                await self._drain(receive, seen)
            await send(message)

        await self.app(scope, limited, sending)

    async def _drain(self, receive: Receive, seen: int) -> None:
        while seen <= self.drain_bytes:
            message = await receive()
            if message["type"] != "http.request" or not message.get("more_body"):
                return
            seen += len(message.get("body", b""))


async def _refuse(send: Send, limit: int) -> None:
    body = (f'{{"error": {{"type": "PayloadTooLarge", "reason": "the request body is over '
            f'the limit of {limit} bytes"}}}}').encode()
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
