"""sd_notify(3) without libsystemd: READY=1 / STOPPING=1 / STATUS=… / WATCHDOG=1 to
$NOTIFY_SOCKET, and the watchdog's ping policy.

A no-op when the daemon does not run under a ``Type=notify`` unit (no socket given).
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Mapping, Sequence

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


def watchdog_interval_s(env: Mapping[str, str], pid: int) -> float | None:
    """Half of ``$WATCHDOG_USEC`` in seconds, when systemd asks this process for pings
    (``$WATCHDOG_PID`` unset or ours); None otherwise."""
    raw = env.get("WATCHDOG_USEC", "").strip()
    if not raw:
        return None
    owner = env.get("WATCHDOG_PID", "").strip()
    if owner and owner != str(pid):
        return None
    try:
        usec = int(raw)
    except ValueError:
        log.warning("systemd.bad_watchdog_usec", value=raw)
        return None
    return usec / 1e6 / 2 if usec > 0 else None


class Watchdog:
    """Sends ``WATCHDOG=1`` every *interval_s*, but only while :meth:`tick` is told the loops
    are healthy: a hung loop stops the pings and systemd restarts the service.

    The main loop calls :meth:`tick` often (every 0.1 s); the stalled/healthy transitions are
    logged once each.
    """

    def __init__(self, *, interval_s: float | None, socket_path: str | None,
                 clock: Callable[[], float] = time.monotonic,
                 send: Callable[..., bool] = sd_notify) -> None:
        self.interval_s = interval_s
        self.socket_path = socket_path
        self._clock = clock
        self._send = send
        self._next = 0.0
        self.pings = 0
        self.withheld_for: tuple[str, ...] = ()

    @property
    def enabled(self) -> bool:
        return bool(self.interval_s and self.socket_path)

    def tick(self, stalled: Sequence[str] = ()) -> bool:
        """Ping if due and nothing is *stalled* (names of hung loops); True if a ping was sent."""
        stalled = tuple(stalled)
        if stalled != self.withheld_for:
            if stalled:
                log.error("watchdog.withheld", stalled=list(stalled),
                          note="no WATCHDOG=1 until the loops turn again; systemd restarts us "
                               "when WatchdogSec= passes")
            elif self.withheld_for:
                log.info("watchdog.resumed")
            self.withheld_for = stalled
        if not self.enabled or stalled:
            return False
        now = self._clock()
        if now < self._next:
            return False
        self._next = now + float(self.interval_s or 0)
        if self._send("WATCHDOG=1", socket_path=self.socket_path):
            self.pings += 1
            return True
        return False
