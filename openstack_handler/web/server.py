"""``openstack-handler web``: the app under uvicorn, told to systemd (Type=notify).

READY=1 is sent once uvicorn listens, with the address in STATUS and in one ``web.listening``
log line (port 0 picks a free port: that line says which). WATCHDOG=1 follows every half of
``WatchdogSec`` while the event loop turns, so a loop that hangs is restarted by systemd. SIGTERM
and SIGINT are uvicorn's: it stops accepting, lets requests in progress finish, then the app's
lifespan closes the dispatcher.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping

import structlog
import uvicorn

from openstack_handler.daemon.systemd import sd_notify
from openstack_handler.web.service import WebService

log = structlog.get_logger(__name__)


def watchdog_interval_s(env: Mapping[str, str]) -> float | None:
    """Half of systemd's WatchdogSec (``WATCHDOG_USEC``), when it asks for one of us."""
    usec = env.get("WATCHDOG_USEC", "")
    pid = env.get("WATCHDOG_PID", "")
    if not usec.isdigit() or (pid and pid != str(os.getpid())):
        return None
    return int(usec) / 2e6


async def _serve(service: WebService) -> int:
    settings = service.settings
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
        while not task.done():
            if interval is not None:
                sd_notify("WATCHDOG=1", socket_path=socket_path)
            await asyncio.wait([task], timeout=interval or 1.0)
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
