"""Waiting for the real processes of the integration and reliability tiers."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def wait_for(predicate: Callable[[], Any], *, timeout_s: float, interval_s: float = 0.05,
             what: str = "condition") -> Any:
    """Poll *predicate* until it returns something truthy (returned); fail after *timeout_s*."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
