"""``openstack-handler web --config FILE``: the TOML file's keys, and who may call the service.

The recognition side is not configured here: the web tier reads the daemon's own settings file
(``daemon_config``) for its targets, burst rule, endpoints and region, so that an image runs
where a video would — the private pool first, Lambda past the burst rule — and invokes
``image_function_name`` (the camera path's ``frame_handler``) on each of those targets.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

#: the systemd credential (LoadCredential=) that holds the token
TOKEN_CREDENTIAL = "web-token"
#: Lambda's synchronous payload limit: the course's images are far smaller
DEFAULT_MAX_UPLOAD_BYTES = 6 * 1024 * 1024


class WebConfigError(ValueError):
    """The web tier cannot start with these settings."""


@dataclass(frozen=True, kw_only=True)
class WebSettings:
    """One flat TOML table (openstack_handler.private_cloud.config_file)."""

    #: the daemon's settings file: targets, burst rule, endpoints, region, input queue
    daemon_config: str
    #: where uploads go, as the course's service did: images and videos in the input bucket,
    #: an image's answer in the output bucket under its stem
    input_bucket: str
    output_bucket: str
    #: the function each target runs for an image (frame_handler: one frame, one answer)
    image_function_name: str = "camera-frame"
    host: str = "127.0.0.1"
    #: 0: any free port (the ``web.listening`` log line says which)
    port: int = 8080
    #: a file holding the token; None: the systemd credential ``web-token`` when there is one
    token_file: str | None = None
    #: callers on loopback need the token too (behind a reverse proxy on this host, where every
    #: caller is loopback); by default they do not, so the course's client works unchanged
    token_on_loopback: bool = False
    #: an upload's body at most (413 past it)
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES
    #: requests waiting for a free slot at most; past it 503 with Retry-After
    max_waiting: int = 200
    #: how long one request may wait for a slot before it is answered 503
    wait_timeout_s: float = 60.0
    #: answers kept for the page's "last results"
    recent_results: int = 20

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be 0..65535, not {self.port}")
        if self.max_upload_bytes < 1:
            raise ValueError("max_upload_bytes must be at least 1")
        if self.max_waiting < 0:
            raise ValueError("max_waiting must be at least 0")
        if self.wait_timeout_s <= 0:
            raise ValueError("wait_timeout_s must be above 0")

    def daemon_config_path(self, settings_file: Path) -> Path:
        """``daemon_config``, relative to the web tier's own settings file."""
        path = Path(self.daemon_config)
        return path if path.is_absolute() else settings_file.parent / path


def is_loopback(host: str) -> bool:
    """Whether *host* is a loopback address (or ``localhost``)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def read_token(settings: WebSettings, env: Mapping[str, str] = os.environ) -> str | None:
    """The token callers off loopback must present: ``token_file``, else the systemd credential
    (``$CREDENTIALS_DIRECTORY/web-token``); None when there is neither. Refuses to serve an
    address other than loopback without one."""
    path: Path | None = None
    if settings.token_file:
        path = Path(settings.token_file)
    elif env.get("CREDENTIALS_DIRECTORY"):
        candidate = Path(env["CREDENTIALS_DIRECTORY"]) / TOKEN_CREDENTIAL
        path = candidate if candidate.exists() else None
    token = None
    if path is not None:
        try:
            token = path.read_text().strip() or None
        except OSError as exc:
            raise WebConfigError(f"the token file {path} cannot be read: {exc.strerror}") from exc
        if token is None:
            raise WebConfigError(f"the token file {path} is empty")
    if token is None and settings.token_on_loopback:
        raise WebConfigError("token_on_loopback is set, but there is no token (token_file, or "
                             f"the systemd credential {TOKEN_CREDENTIAL})")
    if token is None and not is_loopback(settings.host):
        raise WebConfigError(
            f"host {settings.host} is not loopback: the web tier needs a token there "
            f"(token_file, or the systemd credential {TOKEN_CREDENTIAL}) and has none")
    return token
