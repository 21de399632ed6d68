"""Which OpenStack instance this daemon runs on, from the Nova metadata service.

At start the daemon asks ``http://169.254.169.254/openstack/latest/meta_data.json`` (short timeout)
for its instance uuid, name, project and availability zone, and binds them into every log line.
Off-cloud (no metadata service, a proxy that answers 403, garbage) it carries on without: this is
optional information, never a reason not to process videos. Deliberately stdlib only: the identity
must not depend on openstacksdk being installed.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

import structlog

log = structlog.get_logger(__name__)

NOVA_METADATA_URL = "http://169.254.169.254/openstack/latest/meta_data.json"
#: meta_data.json is a few KiB (keys and user files are elsewhere); more than this is not it.
MAX_BYTES = 256 * 1024


@dataclass(frozen=True)
class InstanceIdentity:
    """The instance as Nova's metadata service describes it."""

    uuid: str
    name: str | None = None
    project_id: str | None = None
    availability_zone: str | None = None

    def log_context(self) -> dict[str, str]:
        """The fields bound into every log line (absent ones left out)."""
        values = {"instance_uuid": self.uuid, "instance_name": self.name,
                  "project_id": self.project_id}
        return {k: v for k, v in values.items() if v}


def parse_metadata(document: Any) -> InstanceIdentity | None:
    """An identity from a decoded meta_data.json, or None when it has no usable uuid."""
    if not isinstance(document, dict):
        return None
    uuid = document.get("uuid")
    if not isinstance(uuid, str) or not uuid:
        return None

    def text(key: str) -> str | None:
        value = document.get(key)
        return value if isinstance(value, str) and value else None

    return InstanceIdentity(uuid=uuid, name=text("name"), project_id=text("project_id"),
                            availability_zone=text("availability_zone"))


def read_identity(url: str, *, timeout_s: float = 1.0) -> InstanceIdentity | None:
    """Ask the metadata service at *url*; None when it is off (empty *url*) or gives no identity.

    *timeout_s* bounds each socket wait, and reading stops with an error once it has passed in
    all, so a server that trickles bytes cannot hold the daemon's start for long.
    """
    if not url:
        return None
    started = time.monotonic()
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            chunks: list[bytes] = []
            size = 0
            while size <= MAX_BYTES:
                left = timeout_s - (time.monotonic() - started)
                if left <= 0:
                    raise TimeoutError("metadata response too slow")
                chunk = response.read(16384)
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
    except (urllib.error.URLError, OSError, ValueError) as exc:  # HTTPError is a URLError
        log.info("identity.unavailable", metadata_url=url, error=str(exc)[:200],
                 error_type=type(exc).__name__, note="not on OpenStack, or no metadata service")
        return None
    if size > MAX_BYTES:
        log.warning("identity.invalid", metadata_url=url, reason=f"more than {MAX_BYTES} bytes")
        return None
    try:
        identity = parse_metadata(json.loads(b"".join(chunks)))
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        log.warning("identity.invalid", metadata_url=url, reason=f"not JSON: {exc}"[:200])
        return None
    if identity is None:
        log.warning("identity.invalid", metadata_url=url, reason="no instance uuid")
        return None
    log.info("identity.found", elapsed_ms=round(1000 * (time.monotonic() - started), 1),
             availability_zone=identity.availability_zone, **identity.log_context())
    return identity
