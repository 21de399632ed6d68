"""``openstack-handler``: the command line.

    openstack-handler run --config FILE      run the daemon (foreground; systemd Type=notify)
        [--daemonize --pidfile FILE --log-file FILE]   detach, for hosts without systemd
    openstack-handler check-config --config FILE [--connect]   validate a settings file (exit 78
                                             if invalid); --connect: do the queues and function answer
    openstack-handler status --config FILE   queue depths and what this machine's daemons processed
    openstack-handler status --cloud NAME    every handler server's heartbeat (server metadata);
                                             one of the two (exit 69 if the queues cannot be read)
    openstack-handler redrive --config FILE [--queue input|output|both|request]
                                             move dead letters back once their cause is fixed
    openstack-handler forget --config FILE KEY...  forget processed videos: their next upload
                                             is processed again (de-duplication drops it)
    openstack-handler autoscale --config FILE     size the private pool (Heat) from the backlog
    openstack-handler pool-agent --config FILE    a pool server's heartbeat and drain handshake
    openstack-handler local up|demo|camera-demo ...  the embedded local cloud (moto + Lambda)
    openstack-handler aws provision ...      the AWS resources, from one declarative definition

Thin: the parser and the dispatch. The commands live beside it, the daemon's in
:mod:`.daemon_commands` and the clouds' (``local …``, ``aws provision``) in :mod:`.cloud_commands`;
each imports what it runs inside itself, so that ``import openstack_handler.cli`` never pulls in
boto3, torch, lambda_image or moto.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from openstack_handler import __version__
from openstack_handler.cli.cloud_commands import add_aws_commands, add_local_commands
from openstack_handler.cli.daemon_commands import add_daemon_commands
from openstack_handler.cli.pool_commands import add_pool_commands
from openstack_handler.cli.web_commands import add_web_commands
from openstack_handler.daemon.errors import ConfigError
from openstack_handler.daemon.exit_codes import ExitCode

Command = Callable[[argparse.Namespace], int]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="openstack-handler",
        description="Hybrid-cloud face recognition: the OpenStack VM daemon and its tools.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_daemon_commands(sub)
    add_pool_commands(sub)
    add_web_commands(sub)
    add_local_commands(sub)
    add_aws_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``openstack-handler`` console script; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Command = args.func
    try:
        return func(args)
    except ConfigError as exc:
        print(f"openstack-handler: configuration error: {exc}", file=sys.stderr)
        return int(ExitCode.CONFIG_ERROR)


if __name__ == "__main__":
    raise SystemExit(main())
