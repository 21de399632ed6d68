"""JSON log lines, and what never reaches them."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
import structlog

from openstack_handler.logs import configure_logging


@pytest.fixture()
def json_lines() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    configure_logging(json=True, stream=stream)
    yield stream
    structlog.reset_defaults()
    logging.getLogger().handlers.clear()


def _lines(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_secret_looking_keys_are_redacted_from_structlog_and_stdlib_lines(
        json_lines: io.StringIO) -> None:
    # WHEN our code and a stdlib logger (as botocore would) log values under secret-looking keys
    structlog.get_logger("t").info("event.one", aws_secret_access_key="AKIA-SECRET-1",
                                   SessionToken="tok-2", key="videos/a.mp4")
    logging.getLogger("foreign").warning("event.two", extra={"Authorization": "AWS4 sig-3",
                                                             "db_password": "pw-4", "n": 5})
    # THEN the values are gone, the keys and every other value stay
    text = json_lines.getvalue()
    for secret in ("AKIA-SECRET-1", "tok-2", "sig-3", "pw-4"):
        assert secret not in text
    one, two = _lines(json_lines)
    assert one["aws_secret_access_key"] == one["SessionToken"] == "[redacted]"
    assert one["key"] == "videos/a.mp4" and one["level"] == "info"
    assert two["Authorization"] == two["db_password"] == "[redacted]" and two["n"] == 5
