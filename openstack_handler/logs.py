"""Logging: structlog configured once in ``main()``; stdlib (boto3/botocore) routed through it.

JSON lines to stdout when stdout is not a TTY (journald keeps them under systemd), a console
renderer on a TTY. Modules just do ``log = structlog.get_logger(__name__)`` and bind per-message
context with :func:`structlog.contextvars.bound_contextvars`. What holds for the whole process (the
OpenStack instance it runs on) is bound once with :func:`bind_process_context`: contextvars do not
reach threads started elsewhere, a processor does.
"""

from __future__ import annotations

import logging
import re
import sys
from typing import Any, TextIO

import structlog
from structlog.typing import EventDict, Processor

#: event-dict keys whose values are never written (defence in depth: we do not log these anyway).
_SECRET_MARKERS = ("secret", "password", "token", "credential", "authorization", "signature")
_SECRET_KEY = re.compile("|".join(_SECRET_MARKERS), re.IGNORECASE)


#: key/values added to every log line of this process (see bind_process_context).
_process_context: dict[str, Any] = {}


def bind_process_context(**values: Any) -> None:
    """Add *values* to every later log line, from every thread (stdlib loggers included)."""
    _process_context.update(values)


def _add_process_context(_logger: Any, _name: str, event_dict: EventDict) -> EventDict:
    for key, value in _process_context.items():
        event_dict.setdefault(key, value)
    return event_dict


def _redact_secrets(_logger: Any, _name: str, event_dict: EventDict) -> EventDict:
    for key in event_dict:
        if _SECRET_KEY.search(key):
            event_dict[key] = "[redacted]"
    return event_dict


def configure_logging(json: bool | None = None, *, level: str = "info",
                      stream: TextIO | None = None) -> None:
    """Configure structlog and stdlib logging once; *json* None means "JSON unless on a TTY"."""
    stream = stream or sys.stdout
    if json is None:
        json = not (hasattr(stream, "isatty") and stream.isatty())
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        _add_process_context,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _redact_secrets,
    ]
    if json:
        # A plain-text traceback, never frame locals (they could hold credentials).
        final: list[Processor] = [structlog.processors.format_exc_info,
                                  structlog.processors.JSONRenderer()]
    else:
        final = [structlog.dev.ConsoleRenderer(colors=stream.isatty())]
    structlog.configure(
        processors=[*shared, structlog.stdlib.PositionalArgumentsFormatter(),
                    structlog.processors.StackInfoRenderer(),
                    structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        # ExtraAdder first, so that a stdlib `extra=` key is redacted like any other.
        foreign_pre_chain=[structlog.stdlib.ExtraAdder(), *shared],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *final],
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # botocore at DEBUG dumps request headers (signatures); keep the SDK at WARNING whatever the
    # daemon's level, so credentials never reach the journal.
    for noisy in ("botocore", "boto3", "urllib3", "s3transfer"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
