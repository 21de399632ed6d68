"""A handler module whose import fails the way a misconfigured function's does (init error)."""

raise RuntimeError("gallery missing at init")


def handler(event, context):  # pragma: no cover - never reached
    return event
