"""``openstack-handler autoscale`` and ``openstack-handler pool-agent``: the private pool's
controller (on the core VM) and its servers' agent. Wiring only: settings file → the OpenStack
side's objects → a loop that tells systemd it is alive (Type=notify, WATCHDOG=1 every round)."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import Any

from openstack_handler.daemon.errors import ConfigError
from openstack_handler.daemon.exit_codes import ExitCode


def add_pool_commands(sub: argparse._SubParsersAction) -> None:
    scale = sub.add_parser(
        "autoscale", help="size the private pool (a Heat stack) from the input queue's backlog",
        description="Every interval_s: read the backlog and the pool's stack, then grow it "
                    "(Heat's count), drain and remove servers, or replace unhealthy ones. One "
                    "JSON log line per decision. SIGTERM stops it after the current round.",
        epilog="exit status: 0 stopped; 78 bad configuration")
    scale.add_argument("--config", "-c", required=True, metavar="FILE",
                       help="TOML settings (openstack_handler.private_cloud.autoscaler)")
    scale.add_argument("--once", action="store_true", help="one round, then exit")
    scale.set_defaults(func=_cmd_autoscale)

    agent = sub.add_parser(
        "pool-agent", help="a pool server's heartbeat and drain handshake (server metadata)",
        description="Every interval_s: read the local function service's /health and publish "
                    "the heartbeat, in-flight count and seconds per message into this server's "
                    "metadata; report drained once a requested drain has run dry.",
        epilog="exit status: 0 stopped; 78 bad configuration")
    agent.add_argument("--config", "-c", required=True, metavar="FILE",
                       help="TOML settings (openstack_handler.private_cloud.pool_agent)")
    agent.set_defaults(func=_cmd_pool_agent)


def _load(cls: type, path: str) -> Any:
    from openstack_handler.private_cloud.config_file import SettingsFileError, load_settings_file

    try:
        return load_settings_file(cls, Path(path))
    except SettingsFileError as exc:
        raise ConfigError(str(exc)) from exc


def _serve(loop: Any, *, name: str) -> int:
    """Run *loop* (``run(on_step=…)``/``stop()``) under systemd's notify protocol until SIGTERM
    or SIGINT."""
    from openstack_handler.daemon.systemd import sd_notify

    socket_path = os.environ.get("NOTIFY_SOCKET")
    ready = threading.Event()

    def on_step(_: object) -> None:
        if not ready.is_set():
            ready.set()
            sd_notify(f"READY=1\nSTATUS={name}: running", socket_path=socket_path)
        sd_notify("WATCHDOG=1", socket_path=socket_path)

    def on_signal(signum: int, frame: FrameType | None) -> None:
        loop.stop()  # a flag only; the round in progress finishes

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    loop.run(on_step=on_step)
    sd_notify(f"STOPPING=1\nSTATUS={name}: stopped", socket_path=socket_path)
    return int(ExitCode.OK)


def _cmd_autoscale(args: argparse.Namespace) -> int:
    import boto3

    from openstack_handler.logs import configure_logging
    from openstack_handler.private_cloud.autoscaler import (
        Autoscaler,
        AutoscaleSettings,
        WebBacklog,
        queue_backlog,
        read_web_token,
    )
    from openstack_handler.private_cloud.cloud_status import connect
    from openstack_handler.private_cloud.pool import HeatPool

    settings = _load(AutoscaleSettings, args.config)
    configure_logging(None, stream=sys.stdout)
    session = boto3.session.Session(profile_name=settings.profile, region_name=settings.region)
    sqs = session.client("sqs", endpoint_url=settings.endpoint_url)
    pool = HeatPool(connect(settings.cloud_name, api_timeout_s=settings.cloud_api_timeout_s),
                    settings.stack_name)
    web = WebBacklog(settings.web_status_url, token=read_web_token(settings)) \
        if settings.web_status_url else None

    def backlog() -> int:
        """The queue's messages, waiting or held by daemons, and the web tier's requests."""
        return queue_backlog(sqs, settings.input_queue_url) + (web.read() if web else 0)

    controller = Autoscaler(settings, pool=pool, backlog=backlog)
    if args.once:  # the decision is its log line; a round that cannot read the pool holds
        controller.step()
        return int(ExitCode.OK)
    return _serve(controller, name="autoscale")


def _cmd_pool_agent(args: argparse.Namespace) -> int:
    import dataclasses

    from openstack_handler.logs import configure_logging
    from openstack_handler.private_cloud.cloud_status import connect
    from openstack_handler.private_cloud.identity import read_identity
    from openstack_handler.private_cloud.pool_agent import AgentSettings, PoolAgent

    settings = _load(AgentSettings, args.config)
    configure_logging(None, stream=sys.stdout)
    if not settings.server_id:  # on a guest: which server this is, from Nova's metadata service
        identity = read_identity(settings.metadata_url, timeout_s=5)
        if identity is None:
            raise ConfigError("pool-agent: no server_id set and none from the metadata service "
                              f"({settings.metadata_url})")
        settings = dataclasses.replace(settings, server_id=identity.uuid)
    agent = PoolAgent(settings, connect=lambda: connect(settings.cloud_name))
    return _serve(agent, name="pool-agent")
