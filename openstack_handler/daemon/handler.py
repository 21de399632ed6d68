"""The daemon: wires settings → clients → consumer and drainer threads, signals and shutdown.

Signal handlers only count signals. The main thread watches that count: the first SIGTERM/SIGINT
stops receiving at once — a long poll in progress is abandoned, not waited out — (the consumer
releases received-but-unstarted messages), says so on the terminal when there is one, waits up to
``grace_period_s`` for in-flight invocations while the drainer keeps writing results, then stops
the drainer once each invocation that succeeded has its result file (it waits for them for what
is left of the grace period, at least ``FLUSH_MIN_S``, and names any still missing), and exits 0;
a second signal exits at once (130). If the grace period expires with invocations still running,
the process exits 75 (EX_TEMPFAIL) — their messages reappear after the visibility timeout.

OpenStack: at start the instance identity (Nova's metadata service, optional) is bound into every
log line; with ``cloud_name`` set, a heartbeat thread publishes the daemon's state to its server's
metadata (openstack_handler.private_cloud.cloud_status), off the work's path, ending with ``state=stopped``.

systemd (``Type=notify``): ``READY=1`` once the consumer's first receive succeeded; ``STATUS=``
with counts every few seconds when it changes; ``WATCHDOG=1`` at half ``$WATCHDOG_USEC`` while
both loops keep turning (a loop stuck for ``stall_limit_s`` stops the pings); ``STOPPING=1``.
"""

from __future__ import annotations

import os
import shlex
import signal
import sqlite3
import sys
import threading
import time
from typing import Any, TextIO

import boto3
import structlog
from botocore.exceptions import BotoCoreError, ClientError

from openstack_handler import __version__
from openstack_handler.daemon.aws_clients import (
    Endpoint,
    build_client,
    env_overridden,
    sqs_client_config,
)
from openstack_handler.daemon.consumer import InputConsumer
from openstack_handler.daemon.drainer import OutputDrainer
from openstack_handler.daemon.errors import ConfigError
from openstack_handler.daemon.exit_codes import ExitCode
from openstack_handler.daemon.placement import build_placement
from openstack_handler.daemon.pool_target import nova_discovery
from openstack_handler.daemon.results_store import ResultsStore
from openstack_handler.daemon.settings import DEFAULT_TARGET, Settings
from openstack_handler.daemon.state import StateDB
from openstack_handler.daemon.systemd import Watchdog, sd_notify
from openstack_handler.logs import bind_process_context
from openstack_handler.private_cloud.cloud_status import (
    CloudStatusPublisher,
    Heartbeat,
    connect,
    heartbeat_from,
    metadata_prefix,
)
from openstack_handler.private_cloud.identity import InstanceIdentity, read_identity

log = structlog.get_logger(__name__)

_MISSING_QUEUE_CODES = ("AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist")
_TICK_S = 0.1
_STATUS_EVERY_S = 2.0
#: the least time the drainer gets to write the results owed after the last invocation ended
#: (what is left of the grace period when that is more)
FLUSH_MIN_S = 5.0
_CONSOLE_EVERY_S = 5.0


def reprocess_hint(settings: Settings) -> str:
    """The command that has a dropped duplicate processed again ({key}: the video's key)."""
    config = settings.provenance.file
    where = f"--config {shlex.quote(config)}" if config else "--config FILE"
    return f"openstack-handler forget {where} {{key}}, then upload it again"


class Handler:
    """The running daemon. ``Handler(settings).run()`` returns an :class:`ExitCode`."""

    def __init__(self, settings: Settings, *, session: Any = None,
                 notify_socket: str | None = None,
                 watchdog_interval_s: float | None = None,
                 console: TextIO | None = None) -> None:
        self.settings = settings
        #: a terminal to tell, in words, that the daemon is stopping and what it waits for
        self.console = console
        self.notify_socket = notify_socket
        self.watchdog = Watchdog(interval_s=watchdog_interval_s, socket_path=notify_socket)
        session = session or boto3.session.Session(region_name=settings.region)
        # Every client on the settings' endpoints (aws_clients): a config that names them
        # reaches nothing else, and one that mixes local queues with AWS is refused here.
        self.sqs, sqs_endpoint = build_client(settings, "sqs", config=sqs_client_config(settings),
                                              session=session)
        self.placement, target_endpoints, self.pool_refreshers = build_placement(
            settings, session=session, discovery=nova_discovery(settings))
        self.endpoints: dict[str, Endpoint] = {"sqs": sqs_endpoint}
        self.endpoints |= {"lambda" if name == DEFAULT_TARGET else f"lambda {name}": endpoint
                           for name, endpoint in target_endpoints.items()}
        try:
            self.state = StateDB(settings.state_db_path, owner=settings.replica)
        except (OSError, sqlite3.Error) as exc:
            raise ConfigError(f"state_dir {settings.state_dir} is not usable: {exc}") from exc
        self.store = ResultsStore(settings.results_dir, replica=settings.replica)
        self.consumer = InputConsumer(
            sqs=self.sqs, queue_url=settings.input_queue_url, placement=self.placement,
            state=self.state, store=self.store,
            wait_time_s=settings.wait_time_s, visibility_timeout_s=settings.visibility_timeout_s,
            max_object_bytes=settings.max_object_bytes,
            outage_backoff_max_s=settings.outage_backoff_max_s,
            reprocess_hint=reprocess_hint(settings),
            receive_visibility_s=settings.receive_visibility_s,
            heartbeat_interval_s=settings.heartbeat_interval_s)
        self.drainer = OutputDrainer(sqs=self.sqs, queue_url=settings.output_queue_url,
                                     store=self.store, state=self.state,
                                     wait_time_s=settings.wait_time_s,
                                     is_known=self.consumer.knows,
                                     outage_backoff_max_s=settings.outage_backoff_max_s,
                                     receive_visibility_s=settings.receive_visibility_s)
        self.stop_event = threading.Event()  # the consumer's: stop receiving
        self.drainer_stop = threading.Event()  # set once in-flight invocations are done
        self._flush_deadline = 0.0  # monotonic; set before drainer_stop
        self.ready = False
        self.identity: InstanceIdentity | None = None
        self.cloud_status: CloudStatusPublisher | None = None
        self._status_text = ""
        self._status_at = 0.0
        self._signals = 0  # written only by the signal handler and request_stop()

    # -- signals -----------------------------------------------------------------------------

    def install_signal_handlers(self) -> None:
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._on_signal)

    def _on_signal(self, signum: int, frame: Any) -> None:
        self._signals += 1  # nothing else: no I/O, no locks, in a signal handler

    def request_stop(self) -> None:
        """What a signal does, for callers without signals (tests, embedding)."""
        self._signals += 1

    # -- run ---------------------------------------------------------------------------------

    def check_queues(self) -> ExitCode:
        """Fail fast on a queue that does not exist (config) or cannot be reached (unavailable)."""
        for name, url in (("input", self.settings.input_queue_url),
                          ("output", self.settings.output_queue_url)):
            try:
                self.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
            except ClientError as exc:
                code = exc.response.get("Error", {}).get("Code", "")
                log.error("startup.queue_unusable", queue=name, queue_url=url, code=code,
                          error=str(exc), endpoint=str(self.endpoints["sqs"]),
                          queue_url_from=self.settings.origin(f"{name}_queue_url"))
                return ExitCode.CONFIG_ERROR if code in _MISSING_QUEUE_CODES else ExitCode.UNAVAILABLE
            except BotoCoreError as exc:
                # Which URL was tried, and why that one (the file, or AWS_ENDPOINT_URL...).
                log.error("startup.queue_unreachable", queue=name, queue_url=url,
                          error=self.endpoints["sqs"].unreachable(exc))
                return ExitCode.UNAVAILABLE
        return ExitCode.OK

    def run(self, *, install_signals: bool = True) -> ExitCode:
        """Run until a signal; returns the exit code (a second signal or an expired grace
        period leaves through :func:`os._exit` because invocation threads cannot be cancelled)."""
        if install_signals:
            self.install_signal_handlers()
        self.identity = read_identity(self.settings.metadata_url,
                                      timeout_s=self.settings.metadata_timeout_s)
        if self.identity is not None:
            bind_process_context(**self.identity.log_context())
        if self.settings.replica:
            bind_process_context(replica=self.settings.replica)
        log.info("handler.starting", pid=os.getpid(), **self.settings.as_log_dict(),
                 endpoints={k: str(v) for k, v in self.endpoints.items()})
        for endpoint in self.endpoints.values():
            ignored = env_overridden(self.settings, endpoint)
            if ignored:
                log.warning("endpoint.environment_ignored", service=endpoint.service,
                            endpoint=str(endpoint), ignored=ignored,
                            note="the settings' endpoint wins over boto3's variables")
        code = self.check_queues()
        if code is not ExitCode.OK:
            self.state.close()
            return code
        try:
            self.store.remove_stale_temp_files()
        except OSError as exc:  # the drainer reports an unusable results dir when it writes
            log.warning("results.stale_temp_scan_failed", error=str(exc))
        earlier = self.state.forget_awaited()
        if earlier:
            log.info("results.owed_by_earlier_run", count=len(earlier),
                     keys=[o.key for o in earlier[:20]],
                     note="its invocations succeeded; their results are on the output queue "
                          "and are drained as usual")
        threads = {
            "consumer": threading.Thread(target=self.consumer.run, name="consumer",
                                         args=(self.stop_event,), daemon=True),
            "drainer": threading.Thread(target=self._drain, name="drainer", daemon=True),
        }
        for refresher in self.pool_refreshers:  # the pools' servers before the first receive
            refresher.start()
        for thread in threads.values():
            thread.start()
        self.cloud_status = self._cloud_status_publisher()
        if self.cloud_status is not None:
            self.cloud_status.start()
        sd_notify("STATUS=starting: waiting for the first receive", socket_path=self.notify_socket)
        log.info("handler.started", watchdog_interval_s=self.watchdog.interval_s,
                 stall_limit_s=self.settings.stall_limit_s)
        code = ExitCode.OK
        while not self._signals:
            dead = [name for name, t in threads.items() if not t.is_alive()]
            if dead:
                log.error("handler.thread_died", threads=dead)
                code = ExitCode.SOFTWARE
                break
            self.main_loop_tick()
            time.sleep(_TICK_S)
        return self._shutdown(threads, code)

    def _drain(self) -> None:
        """The drainer thread: drain until the consumer is done, then write what is owed."""
        self.drainer.run(self.drainer_stop)
        self.drainer.flush(timeout_s=self._flush_deadline - time.monotonic())

    def main_loop_tick(self) -> None:
        """One turn of the main loop's duties: READY once, the watchdog, STATUS when it changes."""
        if not self.ready and self.consumer.first_poll.is_set():
            self.ready = True
            sd_notify("READY=1\nSTATUS=" + self.status_text(), socket_path=self.notify_socket)
            log.info("handler.ready")
            if self.cloud_status is not None:
                self.cloud_status.poke()
        self.watchdog.tick(self.stalled_loops())
        now = time.monotonic()
        if self.ready and now - self._status_at >= _STATUS_EVERY_S:
            self._status_at = now
            text = self.status_text()
            if text != self._status_text:
                self._status_text = text
                sd_notify("STATUS=" + text, socket_path=self.notify_socket)

    def _cloud_status_publisher(self) -> CloudStatusPublisher | None:
        """The heartbeat to this server's metadata, when a cloud is configured and the server
        is known (``cloud_server``, else the instance uuid from the metadata service)."""
        cloud = self.settings.cloud_name
        if not cloud:
            return None
        server = self.settings.cloud_server or (self.identity.uuid if self.identity else None)
        if server is None:
            log.warning("cloud_status.off", cloud=cloud,
                        reason="no cloud_server set and no instance uuid from the metadata service")
            return None
        timeout = self.settings.cloud_api_timeout_s
        log.info("cloud_status.on", cloud=cloud, server=server,
                 interval_s=self.settings.cloud_heartbeat_interval_s)
        return CloudStatusPublisher(connect=lambda: connect(cloud, api_timeout_s=timeout),
                                    server=server, snapshot=self.heartbeat,
                                    interval_s=self.settings.cloud_heartbeat_interval_s,
                                    prefix=metadata_prefix(self.settings.replica))

    def heartbeat(self, state: str | None = None) -> Heartbeat:
        """What the cloud heartbeat says now: the durable counters and the last error."""
        snap = self.state.snapshot()
        return heartbeat_from(state=state or self.lifecycle_state(), version=__version__,
                              counters=snap.counters, last_error=snap.last_error,
                              interval_s=self.settings.cloud_heartbeat_interval_s)

    def lifecycle_state(self) -> str:
        """starting (before the first receive), running, degraded (a dependency is down or a
        loop stalled), stopping."""
        if self._signals:
            return "stopping"
        if not self.ready:
            return "starting"
        return "degraded" if self.problems() else "running"

    def problems(self) -> list[str]:
        """What is wrong right now, in words (empty when all is well)."""
        problems = [label for label, state in (
            ("SQS input unreachable", self.consumer.sqs_state),
            ("SQS output unreachable", self.drainer.sqs_state),
            ("results dir unwritable", self.drainer.disk_state)) if state.down]
        targets = self.placement.targets
        for target in targets:
            if target.availability.down:
                problems.append("Lambda unavailable" if len(targets) == 1 else
                                f"target {target.name} unavailable")
        stalled = self.stalled_loops()
        if stalled:
            problems.append("stalled: " + ", ".join(stalled))
        return problems

    def stalled_loops(self, now: float | None = None) -> list[str]:
        """Names of the loops that have not turned for ``stall_limit_s`` (hung)."""
        now = time.monotonic() if now is None else now
        limit = self.settings.stall_limit_s
        loops = {"consumer": self.consumer.last_progress, "drainer": self.drainer.last_progress}
        return [name for name, stamp in loops.items() if now - stamp > limit]

    def status_text(self) -> str:
        """One line for ``systemctl status``: in flight, videos, results, outages."""
        c, d = self.consumer.stats, self.drainer.stats
        parts = [f"in flight {self.consumer.in_flight}/{self.settings.total_slots}",
                 f"videos ok {c.succeeded} failed {c.failed}",
                 f"results written {d.written + d.unchanged}",
                 f"duplicates {c.duplicates}"]
        if len(self.placement.targets) > 1:  # where the work went, in this run
            parts.append("split " + " ".join(f"{t['name']} {t['invocations']}"
                                             for t in self.placement.snapshot()))
        return "; ".join(parts + self.problems())

    def _shutdown(self, threads: dict[str, threading.Thread], code: ExitCode) -> ExitCode:
        grace = self.settings.grace_period_s
        in_flight = self.consumer.in_flight
        log.info("handler.stopping", in_flight=in_flight, grace_period_s=grace,
                 signals=self._signals)
        if in_flight:
            self._say(f"stopping: waiting up to {grace} s (grace_period_s) for {in_flight} "
                      "video(s) in flight, so that their results are written; Ctrl-C again exits "
                      "now (they are then processed again after the visibility timeout, "
                      f"{self.settings.visibility_timeout_s} s)")
        else:
            self._say("stopping (nothing in flight)")
        sd_notify("STOPPING=1", socket_path=self.notify_socket)
        self.stop_event.set()
        # In-flight invocations get the grace period, while the drainer keeps writing their
        # results. A long poll does not hold the stop up: the consumer abandons it (what it
        # returns late is released; openstack_handler.daemon.receiver).
        now = time.monotonic()
        grace_deadline = now + grace
        poll_deadline = max(grace_deadline, now + self.settings.sqs_read_timeout_s + 5)
        next_word = now + _CONSOLE_EVERY_S
        while threads["consumer"].is_alive():
            self._check_second_signal()
            now = time.monotonic()
            if now >= grace_deadline and self.consumer.in_flight:
                log.warning("handler.grace_expired", in_flight=self.consumer.in_flight,
                            note="their messages reappear after the visibility timeout")
                self._say(f"grace period over with {self.consumer.in_flight} video(s) in "
                          f"flight: exiting ({int(ExitCode.TEMPFAIL)}); they are processed again "
                          "after the visibility timeout")
                self._hard_exit(ExitCode.TEMPFAIL)
            if now >= poll_deadline:
                log.warning("handler.poll_did_not_return", note="nothing in flight; exiting")
                self._hard_exit(code)
            if now >= next_word and self.consumer.in_flight:
                next_word = now + _CONSOLE_EVERY_S
                self._say(f"still waiting for {self.consumer.in_flight} video(s) in flight "
                          f"({max(0, round(grace_deadline - now))} s of the grace period left)")
            self.watchdog.tick()
            time.sleep(_TICK_S)
        # Then the drainer: it abandons its poll, writes every result still owed (for what is
        # left of the grace period, at least FLUSH_MIN_S), stops.
        self._flush_deadline = max(grace_deadline, time.monotonic() + FLUSH_MIN_S)
        self.drainer_stop.set()
        flush_deadline = self._flush_deadline + self.settings.sqs_read_timeout_s + 5
        while threads["drainer"].is_alive():
            self._check_second_signal()
            if time.monotonic() >= flush_deadline:
                log.warning("handler.flush_did_not_finish",
                            note="the results left stay on the output queue for the next start")
                self._hard_exit(code)
            self.watchdog.tick()
            time.sleep(_TICK_S)
        for refresher in self.pool_refreshers:
            refresher.stop()
        if self.cloud_status is not None:  # bounded: a hung cloud costs seconds, not the stop
            self.cloud_status.stop(final=self.heartbeat("stopped"))
        self.state.close()
        log.info("handler.stopped", exit_code=int(code), consumer=vars(self.consumer.stats),
                 drainer=vars(self.drainer.stats))
        self._say(f"stopped (exit {int(code)})")
        return code

    def _say(self, text: str) -> None:
        """One line for a person at the terminal (the log lines carry the same facts)."""
        if self.console is not None:
            try:
                print(f"openstack-handler: {text}", file=self.console, flush=True)
            except OSError:  # the terminal went away: the logs still have it
                self.console = None

    def _check_second_signal(self) -> None:
        if self._signals >= 2:
            log.warning("handler.second_signal_exiting_now", in_flight=self.consumer.in_flight)
            self._say(f"second signal: exiting now ({int(ExitCode.INTERRUPTED)})")
            self._hard_exit(ExitCode.INTERRUPTED)

    def _hard_exit(self, code: ExitCode) -> None:
        # Invocation threads cannot be cancelled; leave now. Unfinished messages are not deleted
        # and reappear after the visibility timeout (the heartbeat dies with the process).
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(int(code))
