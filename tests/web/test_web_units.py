"""The web tier's rules one at a time: what an upload is by its bytes, the key its name becomes,
who may call, and the dispatcher's bounded line and failover (fake invokers for the error paths;
the real path is in the other files of this tier)."""

from __future__ import annotations

import asyncio
import base64
import threading
from pathlib import Path
from typing import Any

import pytest
from starlette.requests import Request

from openstack_handler.daemon.availability import Availability
from openstack_handler.daemon.errors import FunctionFailed, InvokeUnavailable
from openstack_handler.daemon.invoker import Invoked
from openstack_handler.daemon.placement import Placement, Target
from openstack_handler.web.app import authorized
from openstack_handler.web.dispatch import Busy, Dispatcher
from openstack_handler.web.settings import WebConfigError, WebSettings, read_token
from openstack_handler.web.uploads import IMAGE, VIDEO, object_key, safe_stem, sniff

JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + b"\0" * 40
PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 40
MP4 = b"\x00\x00\x00\x20ftypisom" + b"\0" * 40


@pytest.mark.parametrize(("data", "kind", "suffix"), [
    (JPEG, IMAGE, ".jpg"), (PNG, IMAGE, ".png"), (b"RIFF\0\0\0\0WEBPVP8 " + b"\0" * 30, IMAGE,
                                                  ".webp"),
    (b"BM" + b"\0" * 40, IMAGE, ".bmp"), (MP4, VIDEO, ".mp4"),
    (b"\x00\x00\x00\x14ftypqt  " + b"\0" * 30, VIDEO, ".mov"),
    (b"\x1a\x45\xdf\xa3" + b"\0" * 40, VIDEO, ".webm"),
    (b"RIFF\0\0\0\0AVI LIST" + b"\0" * 30, VIDEO, ".avi")])
def test_an_upload_is_known_by_its_first_bytes(data: bytes, kind: str, suffix: str) -> None:
    sniffed = sniff(data)
    assert sniffed is not None and (sniffed.kind, sniffed.suffix) == (kind, suffix)


@pytest.mark.parametrize("data", [b"", b"hello world", b"GIF89a" + b"\0" * 40, b"%PDF-1.7"])
def test_anything_else_is_neither(data: bytes) -> None:
    assert sniff(data) is None


@pytest.mark.parametrize(("name", "stem"), [
    ("test_00.jpg", "test_00"), ("dir/sub/face.png", "face"), ("..\\..\\win.jpg", "win"),
    ("../../etc/passwd", "passwd"), ("a\x00b.jpg", "ab"), (".hidden.jpg", "hidden"),
    ("..", "upload"), ("", "upload"), (None, "upload"), ("my photo (1).jpeg", "my_photo_1"),
    ("x" * 2048 + ".jpg", "x" * 100), ("Ünïcode.jpg", "Unicode"), ("写真.jpg", "upload")])
def test_a_file_name_becomes_one_plain_stem(name: str | None, stem: str) -> None:
    assert safe_stem(name) == stem


def test_the_key_keeps_a_suffix_that_suits_the_bytes_and_else_takes_theirs() -> None:
    jpeg, mp4 = sniff(JPEG), sniff(MP4)
    assert jpeg is not None and mp4 is not None
    assert object_key("test_00.jpg", jpeg) == "test_00.jpg"
    assert object_key("Photo.JPEG", jpeg) == "Photo.jpeg"
    assert object_key("notes.txt", jpeg) == "notes.jpg"
    assert object_key("clip.mp4", jpeg) == "clip.jpg"
    assert object_key("class clip.MOV", mp4) == "class_clip.mov"
    assert object_key(None, mp4) == "upload.mp4"


def _request(peer: str, authorization: str | None = None) -> Request:
    headers = [(b"authorization", authorization.encode())] if authorization else []
    return Request({"type": "http", "method": "GET", "path": "/", "headers": headers,
                    "client": (peer, 40000)})


def test_only_callers_off_loopback_need_the_token_bearer_or_basic() -> None:
    basic = "Basic " + base64.b64encode(b"anyone:s3cret").decode()
    assert authorized(_request("10.0.0.5"), None)
    assert authorized(_request("127.0.0.1"), "s3cret")
    assert authorized(_request("::1"), "s3cret")
    assert not authorized(_request("10.0.0.5"), "s3cret")
    assert not authorized(_request("10.0.0.5", "Bearer s3cre"), "s3cret")
    assert not authorized(_request("10.0.0.5", "Basic !!!"), "s3cret")
    assert authorized(_request("10.0.0.5", "Bearer s3cret"), "s3cret")
    assert authorized(_request("10.0.0.5", basic), "s3cret")
    # behind a reverse proxy on this host every caller is loopback: token_on_loopback
    assert not authorized(_request("127.0.0.1"), "s3cret", on_loopback=True)
    assert authorized(_request("127.0.0.1", "Bearer s3cret"), "s3cret", on_loopback=True)


def _settings(**values: Any) -> WebSettings:
    return WebSettings(daemon_config="d.toml", input_bucket="in", output_bucket="out", **values)


def test_the_token_comes_from_its_file_or_the_systemd_credential(tmp_path: Path) -> None:
    assert read_token(_settings(), {}) is None  # loopback: none needed
    with pytest.raises(WebConfigError, match="needs a token"):
        read_token(_settings(host="0.0.0.0"), {})
    (tmp_path / "web-token").write_text("from-credential\n")
    assert read_token(_settings(host="0.0.0.0"),
                      {"CREDENTIALS_DIRECTORY": str(tmp_path)}) == "from-credential"
    (tmp_path / "file").write_text("from-file")
    assert read_token(_settings(host="10.1.2.3", token_file=str(tmp_path / "file")), {}) == \
        "from-file"
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(WebConfigError, match="empty"):
        read_token(_settings(token_file=str(tmp_path / "empty")), {})
    with pytest.raises(WebConfigError, match="no token"):
        read_token(_settings(token_on_loopback=True), {})
    with pytest.raises(WebConfigError, match="cannot be read"):
        read_token(_settings(token_file=str(tmp_path / "missing")), {})


class FakeInvoker:
    """Blocks each run until released; raises what it is told to."""

    function_name = "camera-frame"

    def __init__(self, error: BaseException | None = None) -> None:
        self.error = error
        self.release = threading.Event()
        self.runs = 0

    def run(self, payload: Any) -> Invoked:
        self.runs += 1
        if self.error is not None:
            raise self.error
        self.release.wait(10)
        return Invoked({"statusCode": 200}, None, 1.0)

    def probe(self) -> None:
        raise InvokeUnavailable("still down")


def _target(name: str, invoker: FakeInvoker, slots: int = 1) -> Target:
    return Target(name=name, invoker=invoker, slots=slots,  # type: ignore[arg-type]
                  availability=Availability(f"target_{name}", cap_s=1.0))


def test_past_max_waiting_a_request_is_refused_at_once_with_retry_after() -> None:
    invoker = FakeInvoker()
    dispatcher = Dispatcher(Placement([_target("private", invoker)]), max_waiting=1,
                            wait_timeout_s=10)

    async def scenario() -> None:
        await dispatcher.start()
        running = asyncio.create_task(dispatcher.invoke({}))
        waiting = asyncio.create_task(dispatcher.invoke({}))
        await asyncio.sleep(0.1)
        assert (dispatcher.running, dispatcher.waiting, dispatcher.held) == (1, 1, 2)
        with pytest.raises(Busy) as refused:
            await dispatcher.invoke({})
        assert refused.value.retry_after_s >= 1
        invoker.release.set()
        assert [d.target for d in await asyncio.gather(running, waiting)] == ["private"] * 2
        assert dispatcher.held == 0 and dispatcher.refused == 1
        await dispatcher.close()

    asyncio.run(scenario())


def test_a_request_that_waits_past_wait_timeout_is_refused() -> None:
    invoker = FakeInvoker()
    dispatcher = Dispatcher(Placement([_target("private", invoker)]), max_waiting=5,
                            wait_timeout_s=0.3)

    async def scenario() -> None:
        await dispatcher.start()
        running = asyncio.create_task(dispatcher.invoke({}))
        await asyncio.sleep(0.05)
        with pytest.raises(Busy, match="within 0.3 s"):
            await dispatcher.invoke({})
        invoker.release.set()
        await running
        await dispatcher.close()

    asyncio.run(scenario())


def test_an_unavailable_target_is_marked_down_and_the_request_moves_to_the_next() -> None:
    down, up = FakeInvoker(InvokeUnavailable("503")), FakeInvoker()
    up.release.set()
    placement = Placement([_target("private", down), _target("aws", up)], burst_after_s=None)
    dispatcher = Dispatcher(placement, max_waiting=5, wait_timeout_s=5)

    async def scenario() -> None:
        await dispatcher.start()
        first = await dispatcher.invoke({})
        second = await dispatcher.invoke({})
        assert (first.target, second.target) == ("aws", "aws")
        assert placement.targets[0].availability.down and down.runs == 1
        await dispatcher.close()

    asyncio.run(scenario())


def test_a_target_without_the_image_function_is_left_for_the_next() -> None:
    from openstack_handler.daemon.errors import InvokeFailed

    missing = FakeInvoker(InvokeFailed("ResourceNotFoundException: Function not found: "
                                       "camera-frame"))
    other = FakeInvoker()
    other.release.set()
    placement = Placement([_target("private", missing), _target("aws", other)])
    dispatcher = Dispatcher(placement, max_waiting=5, wait_timeout_s=5)

    async def scenario() -> None:
        await dispatcher.start()
        assert (await dispatcher.invoke({})).target == "aws"
        assert placement.targets[0].availability.down
        await dispatcher.close()

    asyncio.run(scenario())


def test_a_function_error_is_the_answer_and_is_not_run_elsewhere() -> None:
    failing, other = FakeInvoker(FunctionFailed("Boom", "x", function_error="Unhandled")), \
        FakeInvoker()
    placement = Placement([_target("private", failing), _target("aws", other)])
    dispatcher = Dispatcher(placement, max_waiting=5, wait_timeout_s=5)

    async def scenario() -> None:
        await dispatcher.start()
        with pytest.raises(FunctionFailed):
            await dispatcher.invoke({})
        assert other.runs == 0 and not placement.targets[0].availability.down
        await dispatcher.close()

    asyncio.run(scenario())


def _run_limited(chunks: list[tuple[bytes, bool]], limit: int,
                 headers: list[tuple[bytes, bytes]] | None = None) -> tuple[int, int]:
    """A request of *chunks* (body, more_body) through BodyLimit in front of an app that reads
    the whole body and answers 413 on BodyTooLarge: (status, receives the app and the limit made);
    a receive past the last chunk would hang, so it fails the test instead."""
    from openstack_handler.web.uploads import BodyLimit, BodyTooLarge

    messages = [{"type": "http.request", "body": b, "more_body": more} for b, more in chunks]
    received = 0
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        nonlocal received
        assert received < len(messages), "a receive after the last part of the body would hang"
        received += 1
        return messages[received - 1]

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def app(scope: Any, receive: Any, send: Any) -> None:
        try:
            while (await receive()).get("more_body"):
                pass
            status = 200
        except BodyTooLarge:
            status = 413
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    limited = BodyLimit(app, limit_bytes=limit)
    asyncio.run(limited({"type": "http", "headers": headers or []}, receive, send))
    return sent[0]["status"], received


def test_a_body_past_the_limit_is_refused_and_drained_without_a_receive_too_many() -> None:
    # the limit passed mid-body: the rest is read before the 413
    assert _run_limited([(b"x" * 60, True), (b"x" * 60, True), (b"x" * 60, False)], 100) == \
        (413, 3)
    # the limit passed by the last part (a slow server reads the end in one piece): no drain
    assert _run_limited([(b"x" * 60, True), (b"x" * 60, False)], 100) == (413, 2)
    # a declared Content-Length over it: refused before the app, the body read and dropped
    assert _run_limited([(b"x" * 60, True), (b"x" * 60, False)], 100,
                        [(b"content-length", b"120")]) == (413, 2)
    assert _run_limited([(b"x" * 60, False)], 100) == (200, 1)


def test_a_request_given_up_mid_invocation_frees_its_slot_when_the_invocation_ends() -> None:
    invoker = FakeInvoker()
    placement = Placement([_target("private", invoker)])
    dispatcher = Dispatcher(placement, max_waiting=5, wait_timeout_s=5)

    async def scenario() -> None:
        await dispatcher.start()
        given_up = asyncio.create_task(dispatcher.invoke({}))
        await asyncio.sleep(0.1)
        given_up.cancel()
        with pytest.raises(asyncio.CancelledError):
            await given_up
        assert placement.targets[0].in_flight == 1  # it still runs in its thread
        invoker.release.set()
        await asyncio.sleep(0.2)
        assert placement.targets[0].in_flight == 0 and dispatcher.held == 0
        assert (await dispatcher.invoke({})).target == "private"
        await dispatcher.close()

    asyncio.run(scenario())
