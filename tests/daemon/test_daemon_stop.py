"""Stopping promptly (issue 18, item 4): a long poll is abandoned, not waited out, and whatever
it returns late is released; on a terminal the daemon says that it stops and what it waits for.

Real signals from outside (os.kill) on a real daemon process, under a watchdog; moto server over
HTTP; the FAKE Lambda endpoint (fake_lambda.py) only to make an invocation slow."""

from __future__ import annotations

import json
import os
import pty
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from daemon_helpers import json_log_lines, queue_counts, s3_event
from fake_lambda import FakeLambda, ok

from openstack_handler.daemon.exit_codes import ExitCode

REPO = Path(__file__).resolve().parents[2]


def write_config(tmp_path: Path, queues: Any, **extra: Any) -> Path:
    values = {"input_queue_url": queues.input, "output_queue_url": queues.output,
              "function_name": "recognise", "results_dir": str(tmp_path / "results"),
              "state_dir": str(tmp_path / "state"), "concurrency": 2,
              "wait_time_s": 20,  # the default long poll: what a stop used to wait out
              "visibility_timeout_s": 60, "grace_period_s": 10, "function_timeout_s": 30,
              "metadata_url": "", **extra}
    path = tmp_path / "handler.toml"
    path.write_text("".join(f"{k} = {json.dumps(v)}\n" for k, v in values.items()))
    return path


class TerminalDaemon:
    """``openstack-handler run`` with its stdout and stderr on a pseudo-terminal, as in a shell."""

    def __init__(self, config: Path, cwd: Path) -> None:
        master, slave = pty.openpty()
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "openstack_handler", "run", "--config", str(config),
             "--log-format", "json"], cwd=cwd, env=env, stdin=subprocess.DEVNULL,
            stdout=slave, stderr=slave, close_fds=True)
        os.close(slave)
        self._master = master
        self._chunks: list[bytes] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while True:
            try:
                chunk = os.read(self._master, 4096)
            except OSError:  # EIO: the child closed the terminal
                return
            if not chunk:
                return
            self._chunks.append(chunk)

    @property
    def text(self) -> str:
        return b"".join(self._chunks).decode("utf-8", "replace").replace("\r\n", "\n")

    def console_lines(self) -> list[str]:
        """What the daemon said to the person (not the JSON log lines)."""
        return [ln for ln in self.text.splitlines() if ln.startswith("openstack-handler: ")]

    def wait_for(self, needle: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if needle in self.text:
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"{needle!r} never appeared; output:\n{self.text[-3000:]}")

    def interrupt(self) -> float:
        """Ctrl-C from outside: SIGINT by os.kill; returns when it was sent."""
        sent = time.monotonic()
        os.kill(self.proc.pid, signal.SIGINT)
        return sent

    def close(self) -> None:
        if self.proc.poll() is None:  # the watchdog: never leave a daemon behind
            self.proc.kill()
            self.proc.wait()
        self._reader.join(timeout=5)
        os.close(self._master)


@pytest.fixture()
def terminal_daemon(tmp_path: Path, queues: Any, fake_lambda: FakeLambda) -> Iterator[Any]:
    started: list[TerminalDaemon] = []

    def factory(**extra: Any) -> TerminalDaemon:
        daemon = TerminalDaemon(write_config(tmp_path, queues, **extra), tmp_path)
        started.append(daemon)
        return daemon

    yield factory
    for daemon in started:
        daemon.close()


def test_ctrl_c_on_an_idle_daemon_stops_at_once_and_says_so(terminal_daemon) -> None:
    # GIVEN an idle daemon in its 20 s long polls, on a terminal
    daemon = terminal_daemon()
    daemon.wait_for('"handler.started"')
    time.sleep(1.0)  # well inside the polls
    # WHEN the user presses Ctrl-C once
    sent = daemon.interrupt()
    code = daemon.proc.wait(timeout=30)
    elapsed = time.monotonic() - sent
    # THEN it exits 0 within a few seconds instead of waiting out the polls (33-37 s before) ...
    assert code == ExitCode.OK
    assert elapsed < 3.0, f"took {elapsed:.1f} s"
    # ... and says on the terminal that it is stopping, and that it stopped
    daemon._reader.join(timeout=5)
    assert daemon.console_lines() == ["openstack-handler: stopping (nothing in flight)",
                                      "openstack-handler: stopped (exit 0)"], daemon.text[-2000:]


def test_on_a_terminal_it_says_why_it_waits_when_videos_are_in_flight(
        terminal_daemon, sqs, queues, fake_lambda: FakeLambda) -> None:
    fake_lambda.behaviour = lambda name, payload: (time.sleep(2.0), ok(payload))[1]
    daemon = terminal_daemon(grace_period_s=10)
    daemon.wait_for('"handler.started"')
    sqs.send_message(QueueUrl=queues.input, MessageBody=json.dumps(s3_event("videos", "v.mp4")))
    fake_lambda.wait_started(timeout=20)
    daemon.interrupt()
    daemon.wait_for("openstack-handler: stopping:")
    assert daemon.proc.wait(timeout=30) == ExitCode.OK
    daemon._reader.join(timeout=5)
    first, *_, last = daemon.console_lines()
    assert first.startswith("openstack-handler: stopping: waiting up to 10 s (grace_period_s) "
                            "for 1 video(s) in flight, so that their results are written; "
                            "Ctrl-C again exits now")
    assert last == "openstack-handler: stopped (exit 0)"
    assert queue_counts(sqs, queues.input) == (0, 0)  # finished and deleted, not abandoned


def test_a_message_the_abandoned_poll_returns_late_is_released(
        make_consumer, sqs, queues, fake_lambda: FakeLambda) -> None:
    # GIVEN a consumer idle in a 20 s long poll
    consumer = make_consumer(wait_time_s=20, visibility_timeout_s=60)
    stop = threading.Event()
    thread = threading.Thread(target=consumer.run, args=(stop,), daemon=True)
    thread.start()
    assert consumer.first_poll.wait(timeout=0.5) is False  # inside the first poll
    time.sleep(0.5)
    # WHEN it is stopped, THEN it returns at once, abandoning the poll
    started = time.monotonic()
    stop.set()
    thread.join(timeout=5)
    assert not thread.is_alive() and time.monotonic() - started < 2.0  # the poll: 20 s
    assert consumer.receiver.abandoned == 1 and consumer.receiver.busy
    # AND a message that arrives while that poll is still out at SQS is handed to it ...
    sqs.send_message(QueueUrl=queues.input, MessageBody=json.dumps(s3_event("videos", "v.mp4")))
    deadline = time.monotonic() + 25
    while consumer.receiver.released_late == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    # ... and released at once: visible again, never invoked, not hidden for the 15 s claim
    got = sqs.receive_message(QueueUrl=queues.input, WaitTimeSeconds=2,
                              MessageSystemAttributeNames=["ApproximateReceiveCount"])
    (message,) = got["Messages"]
    assert message["Attributes"]["ApproximateReceiveCount"] == "2"  # the abandoned poll's + ours
    assert consumer.receiver.released_late == 1 and fake_lambda.calls == []


def test_after_the_process_is_gone_a_late_message_is_hidden_for_the_short_claim_only(
        terminal_daemon, sqs, queues) -> None:
    # GIVEN a daemon stopped while idle (its long polls still out at SQS when it exits)
    daemon = terminal_daemon(visibility_timeout_s=60)
    daemon.wait_for('"handler.started"')
    time.sleep(0.5)
    daemon.interrupt()
    assert daemon.proc.wait(timeout=10) == ExitCode.OK
    # WHEN a message arrives before the orphaned poll ends (SQS hands it to the dead request)
    sent = time.monotonic()
    sqs.send_message(QueueUrl=queues.input, MessageBody=json.dumps(s3_event("videos", "v.mp4")))
    # (the orphaned poll, woken by the send, gets the first look: on a loaded machine its thread
    # can wake later than a receive sent at once, which would then take the message itself)
    time.sleep(1.0)
    # THEN it is back within the receive's short claim (15 s), not the 60 s visibility timeout
    deadline = sent + 40
    message = None
    while message is None and time.monotonic() < deadline:
        got = sqs.receive_message(QueueUrl=queues.input, WaitTimeSeconds=5,
                                  MessageSystemAttributeNames=["ApproximateReceiveCount"])
        message = (got.get("Messages") or [None])[0]
    back_after = time.monotonic() - sent
    assert message is not None
    # the dead process's poll did take it (else this test would prove nothing) ...
    assert message["Attributes"]["ApproximateReceiveCount"] == "2"
    # ... and it was hidden for the claim, not for the visibility timeout
    assert 10 < back_after < 25, f"hidden {back_after:.1f} s"


def test_a_finished_consumer_leaves_no_receive_thread_behind(make_consumer, sqs, queues,
                                                             fake_lambda: FakeLambda) -> None:
    # (a thread that outlived its consumer would keep the consumer and its boto3 clients alive)
    sqs.send_message(QueueUrl=queues.input, MessageBody=json.dumps(s3_event("videos", "v.mp4")))
    consumer = make_consumer()
    consumer.run(max_messages=1, max_idle=0.5)
    assert consumer.receiver.abandoned == 0
    deadline = time.monotonic() + 5
    while consumer.receiver.running and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not consumer.receiver.running


# -- the stop waits for the results it owes (issue 25) ---------------------------------------------

def test_a_result_that_shows_up_after_its_invocation_returned_is_on_disk_before_exit_0(
        terminal_daemon, sqs, queues, fake_lambda: FakeLambda, tmp_path: Path) -> None:
    # GIVEN a function whose result becomes visible on the output queue 2 s after its
    # invocation returned (SQS's delivery delay: every receive until then comes back empty)
    def late_result(name: str, payload: dict[str, Any]) -> Any:
        reply = ok(payload)
        (result,) = reply.body["results"]
        sqs.send_message(QueueUrl=queues.output, MessageBody=json.dumps(result), DelaySeconds=2)
        return reply

    fake_lambda.behaviour = late_result
    daemon = terminal_daemon(grace_period_s=10)
    daemon.wait_for('"handler.started"')
    sqs.send_message(QueueUrl=queues.input,
                     MessageBody=json.dumps(s3_event("videos", "dir/late clip.mp4")))
    # WHEN it is stopped as soon as the invocation has returned
    daemon.wait_for('"video.processed"')
    daemon.interrupt()
    # THEN it exits 0 with the result written and its message gone from the output queue
    assert daemon.proc.wait(timeout=30) == ExitCode.OK
    assert (tmp_path / "results" / "dir" / "late clip.csv").read_text() == \
        "president_trump,physics,junior\n"
    assert queue_counts(sqs, queues.output) == (0, 0)
    assert '"drainer.results_missing"' not in daemon.text


def test_a_result_that_never_comes_is_named_when_the_wait_ends_and_stays_owed_to_the_queue(
        terminal_daemon, sqs, queues, fake_lambda: FakeLambda, tmp_path: Path) -> None:
    # GIVEN a function that answers success but whose result never reaches the output queue
    daemon = terminal_daemon(grace_period_s=1)
    daemon.wait_for('"handler.started"')
    sqs.send_message(QueueUrl=queues.input, MessageBody=json.dumps(s3_event("videos", "lost.mp4")))
    daemon.wait_for('"video.processed"')
    # WHEN it is stopped
    sent = daemon.interrupt()
    assert daemon.proc.wait(timeout=30) == ExitCode.OK
    elapsed = time.monotonic() - sent
    # THEN it waited for it (at least FLUSH_MIN_S, the grace period being shorter), then named it
    daemon._reader.join(timeout=5)
    (missing,) = [line for line in json_log_lines(daemon.text)
                  if line.get("event") == "drainer.results_missing"]
    assert missing["missing"] == [{"bucket": "videos", "key": "lost.mp4", "etag": "0123abcd",
                                   "request_id": "fake-req"}]
    assert 5.0 <= elapsed < 12.0, elapsed
    assert not (tmp_path / "results" / "lost.csv").exists()
