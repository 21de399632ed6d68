"""The instance identity from a real HTTP metadata service: found, absent, slow, garbage; and
that it reaches every log line, from every thread."""

from __future__ import annotations

import io
import json
import threading
import time
from typing import Any

import structlog
from conftest import META_DATA, Canned, CannedServer, closed_port

from openstack_handler.logs import bind_process_context, configure_logging
from openstack_handler.private_cloud.identity import InstanceIdentity, parse_metadata, read_identity

PATH = "/openstack/latest/meta_data.json"


def test_reads_uuid_name_project_and_zone(canned_server: CannedServer) -> None:
    canned_server.routes[("GET", PATH)] = Canned(200, json.dumps(META_DATA).encode())
    identity = read_identity(canned_server.url + PATH)
    assert identity == InstanceIdentity(uuid=META_DATA["uuid"], name="handler-vm-1",
                                        project_id=META_DATA["project_id"],
                                        availability_zone="nova")
    assert identity.log_context() == {"instance_uuid": META_DATA["uuid"],
                                      "instance_name": "handler-vm-1",
                                      "project_id": META_DATA["project_id"]}


def test_nothing_listening_is_none_at_once() -> None:
    started = time.monotonic()
    assert read_identity(f"http://127.0.0.1:{closed_port()}{PATH}", timeout_s=1.0) is None
    assert time.monotonic() - started < 0.5


def test_a_slow_service_is_none_within_the_timeout(canned_server: CannedServer) -> None:
    canned_server.routes[("GET", PATH)] = Canned(200, json.dumps(META_DATA).encode(), delay_s=3)
    started = time.monotonic()
    assert read_identity(canned_server.url + PATH, timeout_s=0.5) is None
    assert time.monotonic() - started < 1.5


def test_refusals_and_garbage_are_none(canned_server: CannedServer) -> None:
    cases = {"/403": Canned(403, b"Forbidden", content_type="text/plain"),
             "/404": Canned(404, b"{}"),
             "/html": Canned(200, b"<html>captive portal</html>", content_type="text/html"),
             "/binary": Canned(200, b"\xff\xfe\x00garbage"),
             "/list": Canned(200, b"[1, 2, 3]"),
             "/no-uuid": Canned(200, json.dumps({"name": "x"}).encode()),
             "/huge": Canned(200, b"{" + b" " * (1024 * 1024) + b"}")}
    for path, reply in cases.items():
        canned_server.routes[("GET", path)] = reply
    for path in cases:
        assert read_identity(canned_server.url + path) is None, path


def test_empty_url_means_off_and_asks_nobody(canned_server: CannedServer) -> None:
    assert read_identity("") is None
    assert canned_server.requests == []


def test_parse_keeps_only_string_fields() -> None:
    identity = parse_metadata({"uuid": "u", "name": 5, "project_id": "", "availability_zone": None})
    assert identity == InstanceIdentity(uuid="u")
    assert identity.log_context() == {"instance_uuid": "u"}


def test_identity_is_in_every_log_line_from_every_thread(process_context: dict[str, Any]) -> None:
    # GIVEN JSON logging and an identity bound once in the main thread
    stream = io.StringIO()
    configure_logging(json=True, stream=stream)
    bind_process_context(**InstanceIdentity(uuid="u-1", name="vm", project_id="p").log_context())
    # WHEN a worker thread logs (contextvars would not reach it) and so does the stdlib
    worker = threading.Thread(target=lambda: structlog.get_logger("t").info("from.thread"))
    worker.start()
    worker.join()
    import logging

    logging.getLogger("botocore.x").warning("from stdlib")
    # THEN both lines carry the instance
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert len(lines) == 2
    for line in lines:
        assert (line["instance_uuid"], line["instance_name"], line["project_id"]) == \
            ("u-1", "vm", "p")
