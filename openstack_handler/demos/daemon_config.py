"""The daemon's config file for a local cloud: its settings (which name the cloud's endpoints)
written as the flat TOML the daemon reads, so the daemon is run as an operator runs it."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from localcloud.cloud import LocalCloud
from openstack_handler.daemon.settings import settings_toml


def write_daemon_config(cloud: LocalCloud, path: Path, results_dir: Path, state_dir: Path,
                        concurrency: int = 4, extra: Mapping[str, Any] | None = None) -> Path:
    """Write the daemon's TOML config for *cloud* atomically; returns *path*. *extra* settings
    are added (with ``targets``, whose slots replace ``concurrency``)."""
    settings = cloud.daemon_settings(results_dir, state_dir, concurrency) | dict(extra or {})
    if settings.get("targets"):
        settings.pop("concurrency")
    return _write_atomically(path, settings_toml(
        settings, header="openstack-handler daemon settings for the local cloud (its moto "
                         "state is in memory: regenerate on every `local up`)"))


def write_web_config(cloud: LocalCloud, path: Path, daemon_config: Path, *, port: int = 0,
                     extra: Mapping[str, Any] | None = None) -> Path:
    """Write the web tier's TOML config for *cloud* atomically: its buckets, the daemon's config
    (whose targets it shares) and the camera path's frame function for images."""
    settings = {"daemon_config": str(daemon_config.resolve()),
                "input_bucket": cloud.provisioned.input_bucket,
                "output_bucket": cloud.provisioned.output_bucket,
                "image_function_name": cloud.resources.frame_function_name,
                "host": "127.0.0.1", "port": port} | dict(extra or {})
    return _write_atomically(path, settings_toml(
        settings, header="openstack-handler web tier settings for the local cloud (regenerate "
                         "on every `local up`)"))


def _write_atomically(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path
