"""sd_notify(3) without libsystemd: READY=1 / STOPPING=1 / STATUS=… to $NOTIFY_SOCKET.

A no-op when the daemon does not run under a ``Type=notify`` unit (no socket given).
"""

from __future__ import annotations

import socket

import structlog

log = structlog.get_logger(__name__)


def sd_notify(message: str, *, socket_path: str | None) -> bool:
    """Send *message* to systemd's notification socket; True if it was sent."""
    if not socket_path:
        return False
    address = "\0" + socket_path[1:] if socket_path.startswith("@") else socket_path
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(message.encode("utf-8"))
    except OSError as exc:
        log.warning("systemd.notify_failed", error=str(exc))
        return False
    return True
