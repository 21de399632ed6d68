"""sd_notify(3) for the service as a ``Type=notify`` unit: READY=1 once it listens and its
functions are warm, WATCHDOG=1 while its HTTP server thread lives, STOPPING=1 on the way out.

The Lambda service imports nothing of the daemon's (it is deployed on its own), hence this
small copy of the protocol. A no-op without ``$NOTIFY_SOCKET``.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable, Mapping


def notify(message: str, env: Mapping[str, str] = os.environ) -> bool:
    """Send *message* to ``$NOTIFY_SOCKET``; True if it was sent."""
    path = env.get("NOTIFY_SOCKET", "")
    if not path:
        return False
    address = "\0" + path[1:] if path.startswith("@") else path
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(message.encode())
    except OSError:
        return False
    return True


def watchdog_interval_s(env: Mapping[str, str] = os.environ) -> float | None:
    """Half of ``$WATCHDOG_USEC`` when systemd asks this process for pings, else None."""
    owner = env.get("WATCHDOG_PID", "").strip()
    if owner and owner != str(os.getpid()):
        return None
    try:
        usec = int(env.get("WATCHDOG_USEC", "0"))
    except ValueError:
        return None
    return usec / 2e6 if usec > 0 else None


def keep_pinging(alive: Callable[[], bool], stop: threading.Event,
                 env: Mapping[str, str] = os.environ) -> threading.Thread | None:
    """A thread that sends WATCHDOG=1 every half WatchdogSec while *alive()* (the HTTP server
    still serves), so that a hung service is restarted; None when no watchdog is asked for."""
    interval = watchdog_interval_s(env)
    if interval is None:
        return None

    def run() -> None:
        while not stop.wait(interval):
            if alive():
                notify("WATCHDOG=1", env)

    thread = threading.Thread(target=run, name="watchdog", daemon=True)
    thread.start()
    return thread
