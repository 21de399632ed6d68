"""The function's log lines: JSON, one object per line, under a Lambda runtime (CloudWatch keeps
them as they are); structlog's console lines elsewhere (the CLI, tests)."""

from __future__ import annotations

import logging
import sys

import structlog


def configure(*, json_lines: bool, level: int = logging.INFO) -> None:
    """Configure structlog once, at the function's init (Runtime.build)."""
    if not json_lines:
        return
    structlog.configure(
        processors=[structlog.contextvars.merge_contextvars, structlog.processors.add_log_level,
                    structlog.processors.TimeStamper(fmt="iso", utc=True),
                    structlog.processors.format_exc_info, structlog.processors.JSONRenderer()],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(sys.stdout),
        cache_logger_on_first_use=True,
    )
