"""The web tier's HTTP side: a Starlette app (ASGI), served by uvicorn (openstack_handler.web.server).

Routes::

    POST /                 the course's contract: multipart ``inputFile`` (an image) →
                           200 text/plain ``<stem>:<name>``; ``Accept: application/json``: the
                           whole answer (openstack_handler.web.recognition)
    GET  /                 the page (upload a photo or a video; results; the queues and targets)
    POST /videos           multipart ``inputFile`` (a video) → 202, Location: /videos/<key>
    GET  /videos/<key>     its result once the daemon's path has it (404 before, with why)
    GET  /api/status       what the web tier holds, the targets' share, the pool, the queues
    GET  /api/recent       the last answers
    GET  /healthz          200 while serving

Errors are JSON ``{"error": {"type", "reason"}}`` (one line of text for a client that asks for
``text/plain`` only): 400 bad input, 401 no or wrong token, 413 too large, 503 busy or no target
(Retry-After), 502 S3 failing. Bad input is never a 500; a 500 is a defect of ours, logged as
``web.unhandled`` with its trace.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hmac
import ipaddress
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from importlib import resources
from typing import Any

import structlog
from botocore.exceptions import BotoCoreError, ClientError
from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from openstack_handler.web.dispatch import Busy, Dispatcher
from openstack_handler.web.recognition import Recognition, RecognitionUnavailable
from openstack_handler.web.uploads import BodyLimit, BodyTooLarge, Upload, UploadRejected

log = structlog.get_logger(__name__)

FIELD = "inputFile"
#: multipart framing and the other fields, above the file itself
MULTIPART_SLACK_BYTES = 64 * 1024


def _wants_json(request: Request) -> bool:
    return "application/json" in request.headers.get("accept", "")


def error(request: Request, status: int, kind: str, reason: str,
          headers: dict[str, str] | None = None) -> Response:
    """An error as JSON, or as one line of text for a client that asked for text."""
    if "text/plain" in request.headers.get("accept", "") and not _wants_json(request):
        return PlainTextResponse(f"{kind}: {reason}\n", status_code=status, headers=headers)
    return JSONResponse({"error": {"type": kind, "reason": reason}}, status_code=status,
                        headers=headers)


def _peer_is_loopback(request: Request) -> bool:
    host = request.client.host if request.client else ""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def authorized(request: Request, token: str | None, *, on_loopback: bool = False) -> bool:
    """No token configured, or a caller on loopback (unless *on_loopback*): open (the course's
    client). Otherwise ``Authorization: Bearer <token>`` or Basic with the token as its
    password, compared in constant time."""
    if token is None or (not on_loopback and _peer_is_loopback(request)):
        return True
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    offered = ""
    if scheme.lower() == "bearer":
        offered = value.strip()
    elif scheme.lower() == "basic":
        try:
            offered = base64.b64decode(value.strip(), validate=True).decode().partition(":")[2]
        except (binascii.Error, UnicodeDecodeError):
            offered = ""
    return hmac.compare_digest(offered.encode(), token.encode())


async def _upload(request: Request, limit: int) -> Upload:
    """The ``inputFile`` part. Raises UploadRejected."""
    try:
        async with request.form(max_files=1, max_fields=16, max_part_size=64 * 1024) as form:
            part = form.get(FIELD)
            if part is None:
                raise UploadRejected(f"the request has no {FIELD!r} field: POST "
                                     f"multipart/form-data with the file in {FIELD!r}")
            if not isinstance(part, UploadFile):
                raise UploadRejected(f"{FIELD!r} must be a file, not a text field")
            data = await part.read(limit + 1)
            if len(data) > limit:
                raise UploadRejected(f"{FIELD} is over the limit of {limit} bytes", status=413)
            return Upload(data, part.filename)
    except HTTPException as exc:  # the multipart parser's own 400s
        raise UploadRejected(f"the form cannot be read: {exc.detail}") from exc


def create_app(recognition: Recognition, dispatcher: Dispatcher, *, token: str | None,
               max_upload_bytes: int, status: Callable[[], Awaitable[dict[str, Any]]],
               token_on_loopback: bool = False) -> Callable[..., Any]:
    """The ASGI app: the routes above behind the token check and the body limit."""

    page = resources.files("openstack_handler.web").joinpath("page.html").read_text()

    async def guarded(request: Request, handler: Callable[[Request], Awaitable[Response]]
                      ) -> Response:
        started = time.perf_counter()
        if not authorized(request, token, on_loopback=token_on_loopback):
            response = error(request, 401, "Unauthorized", "this service needs its token "
                             "(Authorization: Bearer TOKEN, or Basic with it as the password)",
                             headers={"WWW-Authenticate": 'Basic realm="face-recognition"'})
        else:
            try:
                response = await handler(request)
            except UploadRejected as exc:
                response = error(request, exc.status, "InvalidUpload" if exc.status == 400
                                 else "PayloadTooLarge", str(exc))
            except BodyTooLarge as exc:
                response = error(request, 413, "PayloadTooLarge", str(exc))
            except Busy as exc:
                response = error(request, 503, "Busy", f"{exc}: try again shortly",
                                 headers={"Retry-After": str(exc.retry_after_s)})
            except RecognitionUnavailable as exc:
                response = error(request, 503, "RecognitionUnavailable", str(exc),
                                 headers={"Retry-After": "5"})
            except (ClientError, BotoCoreError) as exc:
                response = error(request, 502, "StorageUnavailable",
                                 f"S3 did not answer as it should: {type(exc).__name__}")
                log.error("web.storage_failed", error=str(exc)[:300])
            except Exception:  # a defect of ours: logged with its trace, the service serves on
                log.exception("web.unhandled", path=request.url.path)
                response = error(request, 500, "InternalError", "the web tier failed on this "
                                 "request; its log says why (web.unhandled)")
        log.info("web.request", method=request.method, path=request.url.path,
                 status=response.status_code,
                 ms=round((time.perf_counter() - started) * 1000, 1))
        return response

    async def index(request: Request) -> Response:
        if request.method == "GET":
            return HTMLResponse(page)
        answer = await recognition.recognise_image(await _upload(request, max_upload_bytes))
        if _wants_json(request):
            return JSONResponse(answer)
        return PlainTextResponse(f"{answer['stem']}:{answer['result']}")

    async def post_video(request: Request) -> Response:
        key = await recognition.accept_video(await _upload(request, max_upload_bytes))
        where = f"/videos/{key}"
        return JSONResponse({"key": key, "status": "queued", "result": where,
                             "bucket": recognition.input_bucket},
                            status_code=202, headers={"Location": where})

    async def get_video(request: Request) -> Response:
        key = request.path_params["key"]
        found = await recognition.video_result(key)
        if found.people is not None:
            if "text/csv" in request.headers.get("accept", ""):
                return PlainTextResponse(found.csv or "", media_type="text/csv")
            return JSONResponse({"key": key, "status": "done", "people": found.people,
                                 "csv": found.csv})
        if not found.uploaded:
            return error(request, 404, "NoSuchVideo",
                         f"no video {key!r} was uploaded to {recognition.input_bucket}")
        return error(request, 404, "NotYetRecognised",
                     f"{key!r} is uploaded and waits in the daemon's queue or runs now: its "
                     "result appears here when the daemon has it",
                     headers={"Retry-After": "2"})

    async def api_status(request: Request) -> Response:
        return JSONResponse(await status())

    async def api_recent(request: Request) -> Response:
        return JSONResponse({"results": list(recognition.recent)})

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok", "held": dispatcher.held})

    def route(path: str, handler: Callable[[Request], Awaitable[Response]],
              methods: list[str]) -> Route:
        async def endpoint(request: Request) -> Response:
            return await guarded(request, handler)
        return Route(path, endpoint, methods=methods)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await dispatcher.start()
        try:
            yield
        finally:
            await dispatcher.close()
            recognition.close()

    app = Starlette(routes=[
        route("/", index, ["GET", "POST"]),
        route("/videos", post_video, ["POST"]),
        route("/videos/{key:path}", get_video, ["GET"]),
        route("/api/status", api_status, ["GET"]),
        route("/api/recent", api_recent, ["GET"]),
        route("/healthz", healthz, ["GET"]),
    ], lifespan=lifespan)
    return BodyLimit(app, limit_bytes=max_upload_bytes + MULTIPART_SLACK_BYTES)
