"""Wiring: the web tier's settings file → the daemon's placement for the image function, the S3
client, :class:`~openstack_handler.web.recognition.Recognition` and the app."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from openstack_handler.daemon.invoker import USER_AGENT
from openstack_handler.daemon.placement import Placement, build_placement
from openstack_handler.daemon.pool_target import PoolInvoker, PoolRefresher, nova_discovery
from openstack_handler.daemon.settings import Settings, load_settings
from openstack_handler.web.app import create_app
from openstack_handler.web.dispatch import Dispatcher
from openstack_handler.web.recognition import Recognition
from openstack_handler.web.settings import WebSettings

#: how long the input queue's depth is reused between status reads
_QUEUE_CACHE_S = 2.0


def image_settings(daemon: Settings, function_name: str) -> Settings:
    """The daemon's settings with every target running *function_name*: the same places, slots
    and burst rule, for images."""
    targets = tuple(dataclasses.replace(t, function_name=function_name) for t in daemon.targets)
    return dataclasses.replace(daemon, function_name=function_name, targets=targets)


@dataclass
class WebService:
    """Everything the web tier runs; :attr:`app` is the ASGI app."""

    settings: WebSettings
    daemon: Settings
    placement: Placement
    dispatcher: Dispatcher
    recognition: Recognition
    refreshers: list[PoolRefresher]
    app: Callable[..., Any]

    def start_refreshers(self) -> None:
        for refresher in self.refreshers:
            refresher.start()

    def stop_refreshers(self) -> None:
        for refresher in self.refreshers:
            refresher.stop()


def build_service(settings: WebSettings, settings_file: Path, *, token: str | None,
                  session: Any = None) -> WebService:
    """The web tier for *settings* (read from *settings_file*). Raises the daemon's
    ConfigError for a bad daemon_config."""
    daemon = image_settings(load_settings(settings.daemon_config_path(settings_file)),
                            settings.image_function_name)
    session = session or boto3.session.Session(region_name=daemon.region)
    placement, _, refreshers = build_placement(daemon, session=session,
                                               discovery=nova_discovery(daemon))
    dispatcher = Dispatcher(placement, max_waiting=settings.max_waiting,
                            wait_timeout_s=settings.wait_timeout_s)
    s3 = session.client("s3", endpoint_url=daemon.endpoint_url,
                        config=Config(max_pool_connections=32, user_agent=USER_AGENT,
                                      retries={"mode": "standard", "max_attempts": 3}))
    sqs = session.client("sqs", endpoint_url=daemon.sqs_endpoint_url or daemon.endpoint_url,
                         config=Config(user_agent=USER_AGENT, connect_timeout=3,
                                       read_timeout=5, retries={"max_attempts": 1}))
    recognition = Recognition(s3=s3, dispatcher=dispatcher, input_bucket=settings.input_bucket,
                              output_bucket=settings.output_bucket,
                              recent=settings.recent_results)
    status = status_reader(daemon, placement, dispatcher, sqs)
    app = create_app(recognition, dispatcher, token=token,
                     max_upload_bytes=settings.max_upload_bytes, status=status,
                     token_on_loopback=settings.token_on_loopback)
    return WebService(settings, daemon, placement, dispatcher, recognition, refreshers, app)


def status_reader(daemon: Settings, placement: Placement, dispatcher: Dispatcher, sqs: Any
                  ) -> Callable[[], Awaitable[dict[str, Any]]]:
    """``GET /api/status``: what this web tier holds (its share of the autoscaler's backlog),
    each target's slots and share of the work, the private pool's servers and the input queue."""
    cache: dict[str, Any] = {"at": 0.0, "queue": None}

    def queue_depth() -> dict[str, Any] | None:
        if time.monotonic() - cache["at"] < _QUEUE_CACHE_S:
            return cache["queue"]
        try:
            attrs = sqs.get_queue_attributes(
                QueueUrl=daemon.input_queue_url,
                AttributeNames=["ApproximateNumberOfMessages",
                                "ApproximateNumberOfMessagesNotVisible"])["Attributes"]
            depth: dict[str, Any] | None = {
                "visible": int(attrs.get("ApproximateNumberOfMessages", 0)),
                "in_flight": int(attrs.get("ApproximateNumberOfMessagesNotVisible", 0))}
        except (ClientError, BotoCoreError):
            depth = None
        cache.update(at=time.monotonic(), queue=depth)
        return depth

    async def read() -> dict[str, Any]:
        targets = placement.snapshot()
        total = sum(int(t["invocations"]) for t in targets) or 1
        for t, target in zip(targets, placement.targets, strict=True):
            t["share"] = round(int(t["invocations"]) / total, 3)
            if isinstance(target.invoker, PoolInvoker):
                t["pool_servers"] = sum(1 for m in target.invoker.members() if m["listed"])
        queue = await asyncio.get_running_loop().run_in_executor(None, queue_depth)
        return {"held": dispatcher.held, "waiting": dispatcher.waiting,
                "running": dispatcher.running, "refused": dispatcher.refused,
                "targets": targets, "burst_after_s": placement.burst_after_s,
                "input_queue": queue}

    return read
