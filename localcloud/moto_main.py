"""``python -m localcloud.moto_main``: moto server, with its hot SQS paths made cheap.

Profiling the no-op benchmark showed moto's SQS doing avoidable work per request, so the local
SQS cost more CPU than the daemon it serves (16–22 ms per message against the daemon's 6–10) and
slowed down as queues filled. Real SQS has no such costs, and a local cloud that does would hide
the daemon's own behaviour. Each patch keeps the semantics (tests/localcloud check them on the
patched server) and is applied only where moto still has the shape it replaces:

- the retention check computed *all* queue attributes, several of which count the queue's
  messages, for every message a receive returned: O(depth²) per receive. It now reads the one
  attribute it needs.
- ``unix_time()`` built two datetimes and ran an import to say what ``time.time()`` says, and
  SQS asks it twice per queued message on every send (through ``Queue.attributes``) and receive.
- the queue scans (visible messages and the three approximate counts) take the time once per
  scan instead of twice per message.
- the request router listed moto's package directory on disk for every request.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any


def _valid_by_retention(self: Any, queue_name: str, message: Any) -> bool:
    from moto.core.utils import unix_time

    retention_s = int(self.get_queue(queue_name).message_retention_period)
    return retention_s + message.sent_timestamp / 1000 > unix_time()


def _fast_unix_time(original: Callable[..., float], scale: float) -> Callable[..., float]:
    """moto's ``unix_time(dt=None)`` builds two datetimes (and runs an import) to say what
    ``time.time()`` says; SQS calls it twice per queued message on every send and receive."""

    def unix_time(dt: Any = None) -> float:
        return time.time() * scale if dt is None else original(dt)

    return unix_time


def _visible_messages(self: Any) -> list[Any]:
    now = time.time() * 1000.0
    return [m for m in self._messages if m.visible_at < now and not m.delayed_until > now]


def _count_visible(self: Any) -> int:
    return len(_visible_messages(self))


def _count_delayed(self: Any) -> int:
    now = time.time() * 1000.0
    return sum(1 for m in self._messages if m.delayed_until > now)


def _count_not_visible(self: Any) -> int:
    now = time.time() * 1000.0
    return sum(1 for m in self._messages if not m.visible_at < now)


#: moto's Queue properties that walk every queued message (on each send, through
#: ``Queue.attributes``, and on each receive), asking each message for the time twice.
_QUEUE_SCANS = {"messages": _visible_messages, "approximate_number_of_messages": _count_visible,
                "approximate_number_of_messages_delayed": _count_delayed,
                "approximate_number_of_messages_not_visible": _count_not_visible}


def apply_patches() -> list[str]:
    """Patch what this moto has; returns the names patched (none if moto changed shape)."""
    from moto import backends
    from moto.sqs import models
    from moto.sqs.models import Message, Queue, SQSBackend

    patched = []
    if callable(getattr(backends, "list_of_moto_modules", None)):
        modules = tuple(backends.list_of_moto_modules())
        backends.list_of_moto_modules = lambda: modules
        patched.append("backends.list_of_moto_modules")
    for name, scale in (("unix_time", 1.0), ("unix_time_millis", 1000.0)):
        if callable(getattr(models, name, None)):
            setattr(models, name, _fast_unix_time(getattr(models, name), scale))
            patched.append(f"sqs.{name}")
    message = Message("probe", "probe")
    if all(hasattr(message, a) for a in ("visible_at", "delayed_until", "visible", "delayed")):
        for name, scan in _QUEUE_SCANS.items():
            if isinstance(getattr(Queue, name, None), property):
                setattr(Queue, name, property(scan))
                patched.append(f"sqs.Queue.{name}")
    if hasattr(SQSBackend, "is_message_valid_based_on_retention_period"):
        SQSBackend.is_message_valid_based_on_retention_period = _valid_by_retention
        patched.append("sqs.is_message_valid_based_on_retention_period")
    return patched


def main(argv: list[str] | None = None) -> None:
    from moto import server

    apply_patches()
    server.main(argv if argv is not None else sys.argv[1:])


if __name__ == "__main__":
    main()
