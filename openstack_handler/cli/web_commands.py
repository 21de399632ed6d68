"""``openstack-handler web``: the web tier (openstack_handler.web). Wiring only."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from openstack_handler.daemon.errors import ConfigError


def add_web_commands(sub: argparse._SubParsersAction) -> None:
    web = sub.add_parser(
        "web", help="the web tier: the course's image service (POST / inputFile) and a page",
        description="An HTTP service (Starlette under uvicorn) that recognises an uploaded image "
                    "on the daemon's targets (its daemon_config: the private pool first, Lambda "
                    "past the burst rule) and answers <stem>:<name>; videos go into the input "
                    "bucket for the daemon. Off loopback it needs a token (token_file or the "
                    "systemd credential web-token). SIGTERM lets requests in progress finish.",
        epilog="exit status: 0 stopped; 1 could not listen; 78 bad configuration")
    web.add_argument("--config", "-c", required=True, metavar="FILE",
                     help="TOML settings (openstack_handler.web.settings)")
    web.set_defaults(func=_cmd_web)


def _cmd_web(args: argparse.Namespace) -> int:
    from openstack_handler.logs import configure_logging
    from openstack_handler.private_cloud.config_file import SettingsFileError, load_settings_file
    from openstack_handler.web.server import serve
    from openstack_handler.web.service import build_service
    from openstack_handler.web.settings import WebConfigError, WebSettings, read_token

    path = Path(args.config)
    try:
        settings = load_settings_file(WebSettings, path)
        token = read_token(settings)
    except (SettingsFileError, WebConfigError) as exc:
        raise ConfigError(str(exc)) from exc
    configure_logging(None, stream=sys.stdout)
    return serve(build_service(settings, path, token=token))
