"""The daemon's commands: ``run``, ``check-config``, ``status``, ``redrive``, ``forget``. Each
imports what it uses inside itself, so that building the parser stays light (no boto3 at
``--help``)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from openstack_handler.daemon.errors import ConfigError
from openstack_handler.daemon.exit_codes import ExitCode
from openstack_handler.daemon.settings import Settings, load_settings

if TYPE_CHECKING:
    from openstack_handler.daemon.aws_clients import Endpoint


def add_daemon_commands(sub: argparse._SubParsersAction) -> None:
    run = sub.add_parser(
        "run", help="run the daemon in the foreground",
        description="Run the daemon: long-poll the input queue, invoke the function for each "
                    "video (up to `concurrency` at once), write results/<video>.csv from the "
                    "output queue. Ctrl-C or SIGTERM stops it after the videos in flight "
                    "(grace_period_s); a second one exits at once.",
        epilog="exit status: 0 stopped cleanly; 69 a queue unreachable at start; 70 a loop died; "
               "75 grace period over with videos in flight; 78 bad configuration; 130 second "
               "signal")
    _add_config_argument(run)
    run.add_argument("--log-format", choices=("auto", "json", "console"), default="auto",
                     help="auto (the default): JSON lines unless stdout is a terminal")
    run.add_argument("--daemonize", action="store_true",
                     help="detach (python-daemon) for hosts without systemd; needs --pidfile and "
                          "--log-file. Under systemd run in the foreground instead (Type=notify)")
    run.add_argument("--pidfile", metavar="FILE", help="with --daemonize: PID lock file")
    run.add_argument("--log-file", metavar="FILE", help="with --daemonize: JSON log lines here")
    run.set_defaults(func=_cmd_run)

    check = sub.add_parser(
        "check-config", help="load the settings as `run` would; exit 78 (EX_CONFIG) if invalid",
        description="Load a settings file exactly as `run` would (file, then "
                    "OPENSTACK_HANDLER_<KEY> variables) and resolve the AWS endpoints, without "
                    "contacting anything; with --connect, also read each queue's attributes "
                    "and the function's configuration.",
        epilog="exit status: 0 ok; 78 invalid settings, or (--connect) a queue or the function "
               "does not exist; 69 (--connect) a queue or the function could not be reached")
    _add_config_argument(check)
    check.add_argument("--connect", action="store_true",
                       help="also check that every queue and the function answer (read-only "
                            "calls: GetQueueAttributes, GetFunctionConfiguration)")
    check.set_defaults(func=_cmd_check_config)

    status = sub.add_parser(
        "status", help="queue depths, processed/failed counts, last error; with --cloud, the "
                       "heartbeat of every handler server in an OpenStack cloud",
        description="One of --config (this machine: queue depths of both queues and their "
                    "dead-letter queues, the state DB's counts, the last duplicate dropped and "
                    "the last error) or --cloud (every handler server's heartbeat) is required.",
        epilog="exit status: 0 ok; 69 a queue (or the cloud) could not be read, the reason on "
               "one stderr line; 78 bad configuration")
    which = status.add_mutually_exclusive_group(required=True)
    _add_config_argument(which)
    which.add_argument("--cloud", metavar="NAME",
                       help="clouds.yaml entry: list the servers carrying handler heartbeat "
                            "metadata and its age (needs the `openstack` extra)")
    status.add_argument("--pool", metavar="STACK",
                        help="with --cloud: also the private pool's servers (active, booting, "
                             "draining) and the burst share")
    status.add_argument("--autoscale-state", metavar="FILE",
                        help="with --pool: the controller's state_file, for its last decision, "
                             "the desired size and the backlog")
    status.add_argument("--pool-target", metavar="NAME", default="private",
                        help="with --pool: the daemons' target name for the pool (default "
                             "private), for the burst share")
    status.set_defaults(func=_cmd_status)

    redrive = sub.add_parser(
        "redrive", help="move messages from a dead-letter queue back to its source queue",
        description="Once the cause of dead letters is fixed, move them back to the queue they "
                    "died on (receive, send, then delete only what was sent).",
        epilog="exit status: 0 moved; 1 some could not be sent; 69 SQS unreachable; 78 no "
               "dead-letter queue, or bad configuration")
    _add_config_argument(redrive)
    redrive.add_argument("--queue", choices=("input", "output", "both", "request", "failed"),
                         default="input",
                         help="whose dead letters to move back (default: input; both: input and "
                              "output; request: the camera path's request queue; failed: "
                              "serverless mode's failure records, whose events are invoked "
                              "again)")
    redrive.set_defaults(func=_cmd_redrive)

    forget = sub.add_parser(
        "forget", help="forget that videos were processed, so that their next upload is",
        description="De-duplication drops every event for a (bucket, key, eTag) the state DB "
                    "remembers: uploading the same bytes again, after deleting a result, "
                    "does nothing. This forgets KEY (every eTag of it), so that its next "
                    "upload or event is processed again. Running daemons see it at once.",
        epilog="exit status: 0 every KEY was forgotten; 1 some KEY was not remembered "
               "(nothing to forget); 78 bad configuration")
    _add_config_argument(forget)
    forget.add_argument("--bucket", metavar="NAME",
                        help="only this input bucket's records (default: any bucket)")
    forget.add_argument("keys", nargs="+", metavar="KEY",
                        help="object key as uploaded, e.g. videos/clip.mp4")
    forget.set_defaults(func=_cmd_forget)


def _add_config_argument(parser: argparse.ArgumentParser | argparse._ActionsContainer) -> None:
    """--config FILE: required, except inside a (required) group of alternatives."""
    in_group = isinstance(parser, argparse._MutuallyExclusiveGroup)
    parser.add_argument("--config", "-c", required=not in_group, metavar="FILE",
                        help="TOML settings file; OPENSTACK_HANDLER_<KEY> variables override it")


def _load(args: argparse.Namespace, env: Mapping[str, str]) -> Settings:
    return load_settings(args.config, env=env)


def _cmd_run(args: argparse.Namespace) -> int:
    settings = _load(args, os.environ)
    if not args.daemonize:
        json_logs = {"auto": None, "json": True, "console": False}[args.log_format]
        from openstack_handler.daemon.systemd import watchdog_interval_s

        return _run_handler(settings, json_logs=json_logs, stream=None,
                            notify_socket=os.environ.get("NOTIFY_SOCKET"),
                            watchdog_s=watchdog_interval_s(os.environ, os.getpid()),
                            console=sys.stderr if sys.stderr.isatty() else None)
    if not (args.pidfile and args.log_file):
        print("openstack-handler: --daemonize needs --pidfile and --log-file", file=sys.stderr)
        return int(ExitCode.USAGE)
    import signal

    import daemon
    import daemon.pidfile

    log_stream = open(args.log_file, "a", buffering=1, encoding="utf-8")  # noqa: SIM115
    context = daemon.DaemonContext(
        working_directory=os.getcwd(), umask=0o022,
        pidfile=daemon.pidfile.TimeoutPIDLockFile(os.path.abspath(args.pidfile),
                                                  acquire_timeout=5),
        stdout=log_stream, stderr=log_stream,
        # SIGTERM stays ours: Handler installs its graceful-stop handler after detaching.
        signal_map={signal.SIGTTIN: None, signal.SIGTTOU: None, signal.SIGTSTP: None})
    with context:
        return _run_handler(settings, json_logs=True, stream=log_stream, notify_socket=None)


def _run_handler(settings: Settings, *, json_logs: bool | None, stream: TextIO | None,
                 notify_socket: str | None, watchdog_s: float | None = None,
                 console: TextIO | None = None) -> int:
    import structlog

    from openstack_handler.daemon.handler import Handler
    from openstack_handler.logs import configure_logging

    configure_logging(json_logs, level=settings.log_level, stream=stream)
    log = structlog.get_logger(__name__)
    try:
        handler = Handler(settings, notify_socket=notify_socket, watchdog_interval_s=watchdog_s,
                          console=console)
        return int(handler.run())
    except ConfigError:
        raise
    except Exception:  # the process's outermost boundary: log it with the traceback
        log.exception("handler.crashed")
        return int(ExitCode.FAILURE)


def _cmd_check_config(args: argparse.Namespace) -> int:
    """For deployment tools (Ansible's ``validate:``): a bad file never replaces a good one."""
    from openstack_handler.daemon.aws_clients import build_client, sqs_client
    from openstack_handler.daemon.invoker import lambda_client_config

    settings = _load(args, os.environ)
    # Building the clients contacts nothing; it resolves the endpoints and refuses a local
    # config that would be sent to AWS.
    sqs, sqs_endpoint = sqs_client(settings)
    targets = settings.placement_targets
    clients = [build_client(settings, "lambda", target=t, config=lambda_client_config(
        function_timeout_s=settings.function_timeout_s, concurrency=t.slots)) for t in targets]
    lambda_endpoint = clients[0][1]
    if not args.connect:
        where = ", ".join(f"{t.name} {t.function_name} ({t.slots} slots) at {endpoint}"
                          for t, (_, endpoint) in zip(targets, clients, strict=True))
        print(f"{args.config}: ok (input {settings.input_queue_url}, function "
              f"{settings.function_name}, results {settings.results_dir}; SQS at {sqs_endpoint}, "
              + (f"Lambda at {lambda_endpoint})" if not settings.targets else
                 f"targets {where})"))
        return int(ExitCode.OK)
    from openstack_handler.daemon import reachability

    queues = reachability.probe_queues(settings, sqs, sqs_endpoint)
    functions = [(endpoint, reachability.probe_function(
        settings, lam, endpoint, function_name=t.function_name,
        setting="function_name" if not settings.targets else f"targets {t.name}"))
        for t, (lam, endpoint) in zip(targets, clients, strict=True)]
    print(f"{args.config}: settings ok")
    sys.stdout.write(reachability.render(sqs_endpoint, queues, *functions[0], functions[1:]))
    code = reachability.exit_code([*queues, *(probe for _, probe in functions)])
    print("reachable: every queue and the function answered" if code is ExitCode.OK else
          f"not reachable (exit {int(code)}): see above")
    return int(code)


def _cmd_status(args: argparse.Namespace) -> int:
    if args.config:
        from openstack_handler.daemon.aws_clients import sqs_client
        from openstack_handler.daemon.status import collect_status, render_status

        settings = _load(args, os.environ)
        sqs, endpoint = sqs_client(settings)
        report = collect_status(settings, sqs, endpoint)
        sys.stdout.write(render_status(report, config=args.config))
        problem = report.problem()
        if problem:  # for scripts: the exit status, and the reason on one line
            sys.stdout.flush()
            print(f"openstack-handler status: {problem}", file=sys.stderr)
            return int(ExitCode.UNAVAILABLE)
    if args.cloud:
        return _cloud_status(args.cloud, pool=args.pool, autoscale_state=args.autoscale_state,
                             pool_target=args.pool_target)
    if args.pool:
        raise ConfigError("status --pool needs --cloud")
    return int(ExitCode.OK)


def _cloud_status(cloud: str, *, pool: str | None = None, autoscale_state: str | None = None,
                  pool_target: str = "private") -> int:
    """The handler servers of *cloud*; openstacksdk is imported here, never at CLI import."""
    try:
        from keystoneauth1.exceptions import ClientException
        from openstack.exceptions import ConfigException, SDKException

        from openstack_handler.private_cloud.cloud_status import (
            connect,
            describe_problem,
            handler_servers,
            render_handler_servers,
        )
    except ImportError:
        print("openstack-handler status --cloud needs openstacksdk: "
              "pip install 'openstack-handler[openstack]'", file=sys.stderr)
        return int(ExitCode.UNAVAILABLE)
    from openstack_handler.private_cloud.autoscaler import read_last_decision
    from openstack_handler.private_cloud.pool import pool_summary, render_pool

    try:
        conn = connect(cloud)
        servers = handler_servers(conn)
        summary = pool_summary(conn, pool, stale_after_s=60) if pool else None
    except ConfigException as exc:
        raise ConfigError(f"cloud {cloud!r}: {exc}") from exc
    except (SDKException, ClientException) as exc:
        print(f"openstack-handler status: cloud {cloud}: {describe_problem(exc)}: {exc}",
              file=sys.stderr)
        return int(ExitCode.UNAVAILABLE)
    sys.stdout.write(render_handler_servers(servers, cloud=cloud))
    if summary is not None:
        decision = read_last_decision(Path(autoscale_state)) if autoscale_state else None
        sys.stdout.write(render_pool(summary, last_decision=decision,
                                     burst_share=_burst_share(servers, pool_target)))
    return int(ExitCode.OK)


def _burst_share(servers: Sequence[Any], pool_target: str) -> float | None:
    """The share of invocations that ran on targets other than the pool's, summed over the
    daemons' heartbeats (``handler_split``: ``private=120,aws=14``); None without any."""
    runs: dict[str, int] = {}
    for server in servers:
        for part in (server.value("split") or "").split(","):
            name, _, count = part.partition("=")
            if name and count.isdigit():
                runs[name] = runs.get(name, 0) + int(count)
    total = sum(runs.values())
    return None if total == 0 else 1 - runs.get(pool_target, 0) / total


def _cmd_forget(args: argparse.Namespace) -> int:
    from datetime import UTC, datetime

    from openstack_handler.daemon.state import StateDB

    settings = _load(args, os.environ)
    path = settings.state_db_path
    if not path.exists():
        print(f"openstack-handler forget: no state DB at {path} (state_dir from "
              f"{settings.origin('state_dir')}): nothing is remembered", file=sys.stderr)
        return int(ExitCode.FAILURE)
    code = ExitCode.OK
    with StateDB(path) as state:
        for key in args.keys:
            records = state.forget(key, bucket=args.bucket)
            if not records:
                print(f"{key}: not remembered (nothing to forget)")
                code = ExitCode.FAILURE
            for r in records:
                at = datetime.fromtimestamp(r.processed_at, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
                print(f"{key}: forgotten (s3://{r.bucket}, eTag {r.etag}, status {r.status}, "
                      f"processed {at}): its next upload or event is processed again")
    return int(code)


def _redrive_failures(settings: Settings, sqs: Any, endpoint: Endpoint) -> int:
    """`redrive --queue failed`: each failure record's event through the function again."""
    from botocore.exceptions import BotoCoreError, ClientError

    from openstack_handler.daemon.aws_clients import lambda_client
    from openstack_handler.daemon.redrive import reinvoke_failures
    from openstack_handler.daemon.status import queue_depth

    if not settings.failure_queue_url:
        print("failed: no failure queue (set failure_queue_url: `local up --mode serverless` "
              "and `aws provision --mode serverless` write it)", file=sys.stderr)
        return int(ExitCode.CONFIG_ERROR)
    depth = queue_depth(sqs, "failed", settings.failure_queue_url, endpoint)
    if depth.error is not None:
        print(f"failed: {depth.reason}", file=sys.stderr)
        return int(ExitCode.UNAVAILABLE)
    lam, lambda_endpoint = lambda_client(settings)
    try:
        result = reinvoke_failures(sqs, lam, settings.failure_queue_url, settings.function_name,
                                   limit=depth.visible or 0)
    except BotoCoreError as exc:
        print(f"failed: {lambda_endpoint.unreachable(exc)}", file=sys.stderr)
        return int(ExitCode.UNAVAILABLE)
    except ClientError as exc:
        print(f"failed: SQS error: {exc}", file=sys.stderr)
        return int(ExitCode.UNAVAILABLE)
    print(f"failed: invoked {settings.function_name} again with {result.moved} event(s) from "
          f"{settings.failure_queue_url}"
          + (f"; {result.failed} could not be invoked and stay there" if result.failed else ""))
    return int(ExitCode.FAILURE if result.failed else ExitCode.OK)


def _cmd_redrive(args: argparse.Namespace) -> int:
    from botocore.exceptions import BotoCoreError, ClientError

    from openstack_handler.daemon.aws_clients import sqs_client
    from openstack_handler.daemon.redrive import dlq_url_for, move_messages
    from openstack_handler.daemon.status import queue_depth
    from openstack_handler.logs import configure_logging

    settings = _load(args, os.environ)
    configure_logging(None, level="warning", stream=sys.stderr)  # stdout: what was moved
    sqs, endpoint = sqs_client(settings)
    queues = {"input": (settings.input_queue_url, settings.input_dlq_url),
              "output": (settings.output_queue_url, settings.output_dlq_url),
              "request": (settings.request_queue_url, settings.request_dlq_url)}
    if args.queue == "failed":
        return _redrive_failures(settings, sqs, endpoint)
    names = ["input", "output"] if args.queue == "both" else [args.queue]
    code = ExitCode.OK
    for name in names:
        source, configured = queues[name]
        if source is None:
            print(f"{name}: no queue (set {name}_queue_url: `local up` and `aws provision` "
                  "write it)", file=sys.stderr)
            code = ExitCode.CONFIG_ERROR
            continue
        try:
            dlq = dlq_url_for(sqs, name, source, configured)
            if dlq is None:
                print(f"{name}: no dead-letter queue (set {name}_dlq_url or a redrive policy)",
                      file=sys.stderr)
                code = ExitCode.CONFIG_ERROR
                continue
            # Only what is there now: a message that fails again and returns meanwhile waits
            # for the next redrive instead of circling.
            depth = queue_depth(sqs, f"{name} DLQ", dlq, endpoint)
            if depth.error is not None:  # not "0 waiting": say why nothing could be read
                print(f"{name}: {depth.reason}", file=sys.stderr)
                code = ExitCode.UNAVAILABLE
                continue
            result = move_messages(sqs, dlq, source, queue=name, limit=depth.visible or 0)
        except BotoCoreError as exc:
            print(f"{name}: {endpoint.unreachable(exc)}", file=sys.stderr)
            code = ExitCode.UNAVAILABLE
            continue
        except ClientError as exc:
            print(f"{name}: SQS error: {exc}", file=sys.stderr)
            code = ExitCode.UNAVAILABLE
            continue
        print(f"{name}: moved {result.moved} message(s) from {dlq} back to {source}"
              + (f"; {result.failed} could not be sent and stay there" if result.failed else ""))
        if result.failed and code is ExitCode.OK:
            code = ExitCode.FAILURE
    return int(code)
