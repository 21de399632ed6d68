"""``openstack-handler web``: the app under uvicorn, told to systemd (Type=notify).

READY=1 is sent once uvicorn listens, with the address in STATUS and in one ``web.listening``
log line (port 0 picks a free port: that line says which). WATCHDOG=1 follows every half of
``WatchdogSec`` while the event loop turns, so a loop that hangs is restarted by systemd. Once a
burst is over (nothing held), the memory it freed is given back (:func:`release_freed_memory`). SIGTERM
and SIGINT are uvicorn's: it stops accepting, lets requests in progress finish, then the app's
lifespan closes the dispatcher.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import time
from collections.abc import Mapping

import structlog
import uvicorn

from openstack_handler.daemon.systemd import sd_notify
from openstack_handler.web.service import WebService

log = structlog.get_logger(__name__)


#: how often the loop looks whether the service went idle (and sends WATCHDOG=1 when due)
_IDLE_CHECK_S = 1.0


def release_freed_memory() -> None:
    """Give the memory a burst of requests freed back to the system (glibc's ``malloc_trim``):
    the allocator keeps freed pages in its arenas otherwise, so an idle service would stay at
    its busiest size. Called once the service is idle again; a no-op off glibc."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def watchdog_interval_s(env: Mapping[str, str]) -> float | None:
    """Half of systemd's WatchdogSec (``WATCHDOG_USEC``), when it asks for one of us."""
    usec = env.get("WATCHDOG_USEC", "")
    pid = env.get("WATCHDOG_PID", "")
    if not usec.isdigit() or (pid and pid != str(os.getpid())):
        return None
    return int(usec) / 2e6


async def _serve(service: WebService) -> int:
    settings = service.settings
    # uvicorn's own start and stop lines (with terminal colour codes in an extra field) say
    # what web.listening and the unit's state say; its warnings and errors still come through
    logging.getLogger("uvicorn.error").setLevel(logging.WARNING)
    config = uvicorn.Config(service.app, host=settings.host, port=settings.port,
                            log_config=None, access_log=False, lifespan="on",
                            timeout_graceful_shutdown=30, server_header=False,
                            # connections at most: the line of waiting requests is bounded
                            # by the dispatcher; this bounds what is read before it
                            limit_concurrency=settings.max_waiting + 256)
    server = uvicorn.Server(config)
    socket_path = os.environ.get("NOTIFY_SOCKET")
    task = asyncio.create_task(server.serve(), name="uvicorn")
    while not server.started and not task.done():
        await asyncio.sleep(0.02)
    if server.started:
        host, port = server.servers[0].sockets[0].getsockname()[:2]
        url = f"http://{host}:{port}/"
        log.info("web.listening", url=url, targets=[t.name for t in service.placement.targets])
        sd_notify(f"READY=1\nSTATUS=web tier: listening on {url}", socket_path=socket_path)
        interval = watchdog_interval_s(os.environ)
        watchdog_at = 0.0
        trimmed_at = service.dispatcher.finished
        while not task.done():
            now = time.monotonic()
            if interval is not None and now >= watchdog_at:
                sd_notify("WATCHDOG=1", socket_path=socket_path)
                watchdog_at = now + interval
            dispatcher = service.dispatcher
            if dispatcher.held == 0 and dispatcher.finished != trimmed_at:
                trimmed_at = dispatcher.finished
                release_freed_memory()
            await asyncio.wait([task], timeout=min(interval or _IDLE_CHECK_S, _IDLE_CHECK_S))
    await asyncio.gather(task, return_exceptions=True)
    sd_notify("STOPPING=1\nSTATUS=web tier: stopped", socket_path=socket_path)
    return 0 if server.started else 1


def serve(service: WebService) -> int:
    """Serve until SIGTERM/SIGINT; 0 after a clean stop, 1 when it could not listen."""
    service.start_refreshers()
    try:
        return asyncio.run(_serve(service))
    finally:
        service.stop_refreshers()
