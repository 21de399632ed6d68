"""``python -m localcloud.moto_main``: moto server, with its SQS receive made linear.

moto 5.2's ``receive_message`` checks each message it returns against the queue's retention
period by computing *all* of the queue's attributes — several of which count the queue's messages —
so one receive costs O(depth²): with a few hundred messages queued, the local SQS spent most of its
CPU there (profiled: 28 % of moto's time in the no-op benchmark). Real SQS has no such cost, and a
local cloud that slows down as the queue fills would hide the daemon's own behaviour. The
replacement reads the one attribute it needs; semantics are unchanged.
"""

from __future__ import annotations

import sys
from typing import Any


def _valid_by_retention(self: Any, queue_name: str, message: Any) -> bool:
    from moto.core.utils import unix_time

    retention_s = int(self.get_queue(queue_name).message_retention_period)
    return retention_s + message.sent_timestamp / 1000 > unix_time()


def apply_patches() -> list[str]:
    """Patch what this moto has; returns the names patched (none if moto changed shape)."""
    from moto.sqs.models import SQSBackend

    patched = []
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
