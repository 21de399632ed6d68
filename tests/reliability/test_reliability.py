"""Reliability of the whole pipeline, proven with real processes: the daemon subprocess, moto
server, the Lambda endpoint (with injected faults) and the real recognition function.

Every test checks results, not just survival: each video has exactly one result file whose text
is exactly the function's CSV for its clip, nothing else is in the results dir, and no temp file
is left. Each fills in a row of the reliability table (see conftest.py).
"""

from __future__ import annotations

import itertools
import json
import os
import random
import signal
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from reliability_helpers import CLIPS, FAST_SETTINGS, Rig, Row, wait_for

from localcloud.cloud import LocalCloud

pytestmark = pytest.mark.integration

MakeRig = Callable[..., Rig]
#: how long after its wait a receive abandoned by a stopped daemon may still be out at moto (its
#: long poll wakes once a second to look at the clock)
ABANDONED_RECEIVE_MARGIN_S = 1.5


def videos(prefix: str, count: int) -> dict[str, str]:
    """*count* distinct keys cycling through the course clips."""
    clips = itertools.islice(itertools.cycle(CLIPS), count)
    return {f"{prefix}/{i:02d} {clip}": clip for i, clip in enumerate(clips)}


def assert_exact(rig: Rig, keys: dict[str, str] | None = None, *,
                 others: tuple[str, ...] = ()) -> None:
    """Exactly one correct result per video in *keys*; besides them only the files *others*."""
    out = rig.outcome(keys)
    assert not out.missing, (out.missing, rig.log_tail())
    assert not out.wrong, out.wrong
    assert not out.duplicated, out.duplicated
    assert out.unexpected == sorted(others), out.unexpected
    assert not out.temp_files, out.temp_files


def handler_runs(rig: Rig) -> int:
    return int(rig.function_stats().get("invocations", 0))


def injected(rig: Rig) -> dict[str, int]:
    stats = rig.function_stats()
    return {k: int(v) for k, v in stats.items() if k.startswith("injected_")}


def delta(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {k: after[k] - before.get(k, 0) for k in after if after[k] - before.get(k, 0)}


def events(rig: Rig, name: str) -> list[dict[str, Any]]:
    return [e for e in rig.log_events() if e.get("event") == name]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# -- 1. crash --------------------------------------------------------------------------------------

def test_kill_9_at_random_moments_loses_and_duplicates_nothing(
        make_rig: MakeRig, course_data: Path, record: Row) -> None:
    # GIVEN 60 distinct videos and a daemon that is killed -9 ten times at random moments of its
    # work: each life ends at a random moment up to 1 s after the daemon is ready (its first
    # receive has succeeded: invocations are starting), or once it has finished 4 more videos,
    # whichever comes first — so the kills land mid-work, not during a start that a loaded
    # machine makes slow, and all ten before the work is done however fast the machine runs
    rig = make_rig()
    keys = videos("crash", 60)
    runs_before = handler_runs(rig)
    rig.upload(keys, course_data)
    rng = random.Random(546)
    done_at_kill: list[int] = []
    while sum(d < len(keys) for d in done_at_kill) < 10 and len(done_at_kill) < 20:
        done_before = len(rig.outcome(keys).complete)
        ready_before = len(events(rig, "handler.ready"))
        proc = rig.start()
        wait_for(lambda n=ready_before: len(events(rig, "handler.ready")) > n, timeout_s=60,
                 what="the daemon ready")
        moment = time.monotonic() + rng.uniform(0.0, 1.0)
        while time.monotonic() < moment and len(rig.outcome(keys).complete) < done_before + 4:
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        done_at_kill.append(len(rig.outcome(keys).complete))
    # WHEN it is started once more and left to finish
    final = rig.start()
    wait_for(lambda: rig.done(keys) and rig.idle(), timeout_s=150, what="all 60 results")
    assert rig.stop(final) == 0
    # THEN every video has exactly one complete, correct result and no temp file remains
    assert_exact(rig, keys)
    mid_run = sum(d < len(keys) for d in done_at_kill)
    assert mid_run >= 10, f"only {mid_run} kills came before the run was complete"
    reruns = handler_runs(rig) - runs_before - len(keys)
    record.__dict__.update(
        test="1 crash: kill -9 x10 at random moments", runs=rig.runs, messages=len(keys),
        faults=f"{len(done_at_kill)} x SIGKILL of the daemon ({mid_run} mid-run)", lost=0,
        duplicates=0,
        notes=f"results complete at each kill: {done_at_kill}; {reruns} re-invocations of videos whose "
              f"daemon died mid-invocation (at-least-once), results idempotent")


# -- 2. flaky function -----------------------------------------------------------------------------

def test_flaky_function_every_video_still_gets_its_correct_result(
        make_rig: MakeRig, rel_cloud: LocalCloud, course_data: Path, record: Row) -> None:
    # GIVEN a function that fails 20 %, times out 5 % and is throttled 10 % of the time
    rig = make_rig()
    rel_cloud.set_faults({"error_rate": 0.2, "timeout_rate": 0.05, "throttle_rate": 0.1,
                          "seed": 2023})
    keys = videos("flaky", 40)
    runs_before, faults_before = handler_runs(rig), injected(rig)
    rig.upload(keys, course_data)
    # WHEN the daemon works through them
    proc = rig.start()
    wait_for(lambda: rig.done(keys) and rig.idle(), timeout_s=180, what="all 40 results")
    assert rig.stop(proc) == 0
    # THEN every result is exact, and each video's handler ran exactly once (faults replace runs)
    assert_exact(rig, keys)
    faults = delta(injected(rig), faults_before)
    runs = handler_runs(rig) - runs_before
    assert runs == len(keys), runs
    assert faults.get("injected_errors", 0) >= 3 and faults.get("injected_throttles", 0) >= 1
    assert rig.depth(rig.p.input_dlq_url) == (0, 0)
    record.__dict__.update(
        test="2 flaky function (20 % error, 5 % timeout, 10 % throttle)", runs=rig.runs,
        messages=len(keys), faults=", ".join(f"{v} {k[9:]}" for k, v in sorted(faults.items())),
        lost=0, duplicates=runs - len(keys),
        notes=f"{runs} handler runs for {len(keys)} videos")


# -- 3. poison -------------------------------------------------------------------------------------

def test_poison_video_goes_to_the_dlq_and_redrive_completes_it_after_the_fix(
        make_rig: MakeRig, rel_cloud: LocalCloud, course_data: Path, record: Row) -> None:
    # GIVEN one video that always fails, ten that do not, and maxReceiveCount 2
    rig = make_rig()
    rig.set_max_receive_count(2)
    rel_cloud.set_faults({"error_keys": ["poison/"]})
    good = videos("fine", 10)
    poison = {"poison/always fails.mp4": "test_5.mp4"}
    runs_before, faults_before = handler_runs(rig), injected(rig)
    rig.upload({**good, **poison}, course_data)
    proc = rig.start()
    # WHEN the daemon runs, the good ones finish and the poison lands in the input DLQ
    wait_for(lambda: rig.done(good), timeout_s=90, what="the good videos")
    wait_for(lambda: rig.depth(rig.p.input_dlq_url)[0] == 1, timeout_s=60,
             what="the poison message in the DLQ")
    assert not rig.done(poison)
    status = rig.cli("status")
    dlq_row = next(line for line in status.stdout.splitlines() if line.startswith("input DLQ"))
    assert dlq_row.split()[2] == "1" and "redrive" in dlq_row, status.stdout
    # WHEN the cause is fixed and the dead letter is redriven
    rel_cloud.set_faults(None)
    redrive = rig.cli("redrive", "--queue", "input")
    assert redrive.returncode == 0 and "input: moved 1 message(s)" in redrive.stdout, redrive
    # THEN it completes, with nothing lost or duplicated
    wait_for(lambda: rig.done(poison) and rig.idle(), timeout_s=60, what="the redriven video")
    assert rig.stop(proc) == 0
    assert_exact(rig, {**good, **poison})
    assert rig.depth(rig.p.input_dlq_url) == (0, 0)
    runs = handler_runs(rig) - runs_before
    assert runs == 11, runs
    faults = delta(injected(rig), faults_before)
    record.__dict__.update(
        test="3 poison -> DLQ -> fix -> redrive", runs=rig.runs, messages=11,
        faults=f"{faults.get('injected_errors', 0)} errors (poison key, maxReceiveCount 2)",
        lost=0, duplicates=runs - 11,
        notes="status showed input DLQ depth 1; `openstack-handler redrive` moved it back")


# -- 4. graceful stop ------------------------------------------------------------------------------

def test_sigterm_under_load_finishes_flushes_and_loses_nothing(
        make_rig: MakeRig, course_data: Path, record: Row) -> None:
    rig = make_rig()
    keys = videos("graceful", 30)
    runs_before = handler_runs(rig)
    rig.upload(keys, course_data)
    stops = []
    for threshold in (6, 16):
        # GIVEN a daemon in the middle of the run
        proc = rig.start()
        wait_for(lambda t=threshold: len(rig.outcome(keys).complete) >= t, timeout_s=90,
                 what=f"{threshold} results")
        # WHEN systemd stops it
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=40)
        stop_s = time.monotonic() - started
        # THEN it exits 0 within the grace period, and every invocation that ran has its
        # result on disk (in-flight ones finished, their results flushed)
        assert code == 0, rig.log_tail()
        runs = handler_runs(rig) - runs_before
        done = len(rig.outcome(keys).complete)
        assert done == runs, (done, runs)
        stops.append((done, round(stop_s, 1)))
        assert stop_s < 6 + 1 + 5
        # (the receives it abandoned on stop stay out at SQS until their wait ends, and one
        # would take the next daemon's first result for its short claim: a late start, not a
        # loss, but this test counts results at each stop. Let them end first.)
        time.sleep(FAST_SETTINGS["wait_time_s"] + ABANDONED_RECEIVE_MARGIN_S)
    # WHEN it is started again, it finishes the rest
    proc = rig.start()
    wait_for(lambda: rig.done(keys) and rig.idle(), timeout_s=90, what="all 30 results")
    assert rig.stop(proc) == 0
    assert_exact(rig, keys)
    runs = handler_runs(rig) - runs_before
    assert runs == len(keys), runs  # nothing was run twice: unstarted messages were released
    released = sum(e.get("count", 0) for e in events(rig, "input.released_unstarted"))
    record.__dict__.update(
        test="4 graceful stop: SIGTERM x2 under load, restart", runs=rig.runs,
        messages=len(keys), faults="2 x SIGTERM", lost=0, duplicates=runs - len(keys),
        notes=f"(results on disk, seconds to exit 0) at each stop: {stops}; "
              f"{released} received-but-unstarted released")


# -- 5. outage -------------------------------------------------------------------------------------

def test_moto_frozen_30_s_then_lambda_down_15_s_the_same_daemon_recovers(
        make_rig: MakeRig, rel_cloud: LocalCloud, course_data: Path, record: Row) -> None:
    rig = make_rig()
    keys = videos("outage", 24)
    rig.upload(keys, course_data)
    proc = rig.start()
    wait_for(lambda: len(rig.outcome(keys).complete) >= 4, timeout_s=60, what="4 results")
    moto_pid = rel_cloud.moto.pid if rel_cloud.moto else None
    assert moto_pid
    # WHEN S3, SQS and DynamoDB stop answering for 30 s
    cpu_before = cpu_seconds(proc.pid)
    os.kill(moto_pid, signal.SIGSTOP)
    try:
        time.sleep(30)
        cpu_during = cpu_seconds(proc.pid) - cpu_before
        assert proc.poll() is None, rig.log_tail()
    finally:
        os.kill(moto_pid, signal.SIGCONT)
    # THEN the same daemon process carries on once moto is back
    wait_for(lambda: len(rig.outcome(keys).complete) >= 12, timeout_s=90, what="12 results")
    # WHEN the Lambda endpoint goes away altogether (connections refused) for 15 s
    endpoint = rel_cloud.endpoint
    assert endpoint is not None
    endpoint.stop()
    cpu_before = cpu_seconds(proc.pid)
    time.sleep(15)
    cpu_lambda_down = cpu_seconds(proc.pid) - cpu_before
    endpoint.start(timeout_s=120)
    # THEN it finishes every video, still the same process, with nothing in the DLQ
    wait_for(lambda: rig.done(keys) and rig.idle(), timeout_s=120, what="all 24 results")
    assert proc.poll() is None and rig.runs == 1
    assert rig.stop(proc) == 0
    assert_exact(rig, keys)
    assert rig.depth(rig.p.input_dlq_url) == (0, 0)
    # the Lambda outage was probed with dry runs against the real service, which touch no
    # message: several of them (a try every 2 s at most, over 15 s and the cold start)
    probes = sum(e.get("probes", 0) for e in events(rig, "consumer.stopped"))
    assert probes >= 4, probes
    assert cpu_during < 3.0, cpu_during  # waiting, not spinning
    assert cpu_lambda_down < 3.0, cpu_lambda_down
    assert not events(rig, "consumer.poll_failed") and not events(rig, "drainer.poll_failed")
    # one line when Lambda went away and one when it came back, not one per retry
    assert len(events(rig, "lambda.unavailable")) == 1
    assert len(events(rig, "lambda.recovered")) == 1
    outage_lines = [e for e in rig.log_events() if str(e.get("event", "")).endswith(
        (".unavailable", ".recovered"))]
    assert len(outage_lines) <= 12, outage_lines
    record.__dict__.update(
        test="5 outage: moto SIGSTOP 30 s, then Lambda endpoint down 15 s", runs=rig.runs,
        messages=len(keys),
        faults="S3+SQS+DynamoDB frozen 30 s (function calls time out); Lambda endpoint "
               "stopped (connections refused) 15 s, then restarted cold", lost=0,
        duplicates=0,
        notes=f"daemon CPU {cpu_during:.2f} s during the moto freeze, {cpu_lambda_down:.2f} s "
              f"during the Lambda outage, probed by {probes} dry runs; outage log lines: "
              f"{[e['event'] for e in outage_lines]}")


# -- 6. bad input ----------------------------------------------------------------------------------

def test_every_kind_of_bad_input_gets_a_clear_outcome_and_no_crash(
        make_rig: MakeRig, course_data: Path, record: Row) -> None:
    rig = make_rig(max_object_bytes=2_000_000)
    rig.set_max_receive_count(2)
    q_in, q_out = rig.p.input_queue_url, rig.p.output_queue_url
    clip = (course_data / "videos" / "test_0.mp4").read_bytes()
    # GIVEN real uploads under hostile keys ...
    hostile = {
        "bad/with spaces/my clip (1).mp4": "test_0.mp4",
        "bad/ünïcödé/видео 視頻.mp4": "test_2.mp4",
        "bad/plus+and%20percent.mp4": "test_4.mp4",
        "bad/../../escape.mp4": "test_6.mp4",
        "bad/" + "long-" * 40 + "/" + "x" * 300 + ".mp4": "test_7.mp4",
    }
    runs_before = handler_runs(rig)
    rig.upload(hostile, course_data)
    # ... an object over the size cap, files that are not videos, one deleted before processing
    rig.upload({"bad/oversized.mp4": "test_1.mp4"}, course_data)
    not_videos = {"bad/empty.mp4": b"", "bad/header-only.mp4": clip[:64],
                  "bad/notes.mp4": b"this is not a video\n" * 20}
    for key, body in not_videos.items():
        rig.s3.put_object(Bucket=rig.bucket, Key=key, Body=body)
    rig.s3.put_object(Bucket=rig.bucket, Key="bad/deleted.mp4", Body=clip)
    rig.s3.delete_object(Bucket=rig.bucket, Key="bad/deleted.mp4")
    # ... messages that are not (useful) S3 events, and two more copies of a real one
    etag = rig.s3.head_object(Bucket=rig.bucket, Key="bad/with spaces/my clip (1).mp4")["ETag"]
    real_event = {"Records": [{"eventVersion": "2.1", "eventSource": "aws:s3",
                               "eventName": "ObjectCreated:Put", "s3": {
                                   "bucket": {"name": rig.bucket},
                                   "object": {"key": "bad/with+spaces/my+clip+%281%29.mp4",
                                              "eTag": etag.strip('"'), "size": len(clip)}}}]}
    removed = json.loads(json.dumps(real_event))
    removed["Records"][0]["eventName"] = "ObjectRemoved:Delete"
    for body in ({"Service": "Amazon S3", "Event": "s3:TestEvent", "Bucket": rig.bucket},
                 "this is { not json", {"hello": "no records"}, removed, real_event, real_event):
        rig.sqs.send_message(QueueUrl=q_in,
                             MessageBody=body if isinstance(body, str) else json.dumps(body))
    # ... and on the output queue a result for a video nobody sent, and a body that is not JSON
    rig.sqs.send_message(QueueUrl=q_out, MessageBody=json.dumps({
        "schema": 1, "status": "ok", "request_id": "elsewhere", "bucket": rig.bucket,
        "key": "bad/stranger.mp4", "etag": "e", "csv": "mr_bean,lawyer,freshmen\n"}))
    rig.sqs.send_message(QueueUrl=q_out, MessageBody="<html>not a result</html>")
    rig.videos["bad/stranger.mp4"] = "test_2.mp4"
    # WHEN one daemon runs through all of it
    proc = rig.start()
    errors = ["bad/oversized.mp4", "bad/deleted.mp4", *not_videos]
    wait_for(lambda: rig.done([*hostile, *errors, "bad/stranger.mp4"]), timeout_s=90,
             what="a result for every upload")
    wait_for(lambda: rig.depth(rig.p.input_dlq_url)[0] == 2
             and rig.depth(rig.p.output_dlq_url)[0] == 1 and rig.idle(), timeout_s=60,
             what="the unusable messages in the dead-letter queues")
    assert proc.poll() is None
    assert rig.stop(proc) == 0
    # THEN the videos have exact results at safe paths, each bad file a clear .error ...
    assert_exact(rig, hostile, others=(
        "bad/deleted.error", "bad/empty.error", "bad/header-only.error", "bad/notes.error",
        "bad/oversized.error", "bad/stranger.csv"))
    error_text = {k: rig.store.path_for(k, ".error").read_text() for k in errors}
    assert error_text["bad/oversized.mp4"].startswith("ObjectTooLarge")
    assert error_text["bad/deleted.mp4"].startswith("ObjectGone")
    for key in not_videos:
        assert not rig.store.path_for(key, ".csv").exists() and error_text[key].strip(), key
    assert rig.store.path_for("bad/stranger.mp4", ".csv").read_text() == \
        "mr_bean,lawyer,freshmen\n"
    assert all(f.resolve().is_relative_to(rig.results.resolve()) for f in rig.files())
    expected_files = len(hostile) + len(errors) + 1
    assert len(rig.files()) == expected_files, [str(f) for f in rig.files()]
    # ... each with its log line; the function ran once per video it could see, never for the
    # oversized one, never twice for the duplicate deliveries
    names = [e.get("event") for e in rig.log_events()]
    for needed in ("input.test_event_dropped", "input.invalid_left_for_dlq", "input.event_dropped",
                   "video.duplicate_dropped", "result.for_unknown_video",
                   "result.invalid_left_for_dlq"):
        assert needed in names, needed
    statuses = sorted(e.get("status") for e in events(rig, "video.processed")
                      if e.get("status") in ("rejected", "gone"))
    assert statuses == ["gone", "rejected"]
    assert names.count("video.duplicate_dropped") == 2
    runs = handler_runs(rig) - runs_before
    assert runs == len(hostile) + len(not_videos) + 1, runs  # + the deleted one (NoSuchKey)
    assert not events(rig, "handler.crashed") and not events(rig, "invocation.crashed")
    record.__dict__.update(
        test="6 bad input through S3/SQS", runs=rig.runs, messages=19,
        faults="test event, non-JSON, no Records, ObjectRemoved, 5 hostile keys (spaces, "
               "unicode, +, %, .., 300-char name), oversized, empty, header-only, non-video, "
               "deleted object, 2 duplicate deliveries, unknown + non-JSON output",
        lost=0, duplicates=0,
        notes="2 input + 1 output message in the DLQs; every upload has one result file")


# -- 7. watchdog -----------------------------------------------------------------------------------

class NotifySocket:
    """A fake $NOTIFY_SOCKET: a datagram socket whose messages are kept with their arrival time."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.messages: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            for line in data.decode().splitlines():
                self.messages.append((time.monotonic(), line))

    def count(self, prefix: str, start: float = 0.0, end: float = float("inf")) -> int:
        return sum(1 for t, m in list(self.messages) if m.startswith(prefix) and start <= t < end)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self.sock.close()


def test_watchdog_pings_stop_while_a_loop_is_hung_and_resume_after(
        make_rig: MakeRig, rel_cloud: LocalCloud, course_data: Path, tmp_path: Path,
        record: Row) -> None:
    rig = make_rig(stall_timeout_s=4)
    notify = NotifySocket(tmp_path / "notify.sock")
    try:
        keys = videos("watchdog", 4)
        rig.upload(keys, course_data)
        proc = rig.start(NOTIFY_SOCKET=str(notify.path), WATCHDOG_USEC="1000000")
        wait_for(lambda: notify.count("READY=1"), timeout_s=30, what="READY=1")
        wait_for(lambda: rig.done(keys), timeout_s=60, what="4 results")
        healthy_from = time.monotonic()
        healthy = wait_for(lambda: notify.count("WATCHDOG=1", healthy_from) >= 4
                           and notify.count("WATCHDOG=1", healthy_from), timeout_s=30,
                           what="pings while healthy")
        # WHEN both loops hang in a receive that does not return (moto frozen)
        moto_pid = rel_cloud.moto.pid if rel_cloud.moto else None
        assert moto_pid
        frozen_at = time.monotonic()
        os.kill(moto_pid, signal.SIGSTOP)
        try:
            time.sleep(10)
        finally:
            thawed_at = time.monotonic()
            os.kill(moto_pid, signal.SIGCONT)
        # THEN the pings stop once the stall limit (4 s) has passed, and come back after: no
        # ping arrived between the daemon's report of the stall and the thaw (the socket keeps
        # the order in which one sender's messages were sent, so load cannot reorder them)
        wait_for(lambda: notify.count("WATCHDOG=1", thawed_at) >= 2, timeout_s=20,
                 what="pings after the thaw")
        messages = list(notify.messages)
        stall_report = next((i for i, (t, m) in enumerate(messages)
                             if m.startswith("STATUS=") and "stalled: " in m and t >= frozen_at),
                            None)
        assert stall_report is not None, messages
        assert messages[stall_report][0] < thawed_at, "the stall was reported while it lasted"
        during = sum(1 for t, m in messages[stall_report:] if m == "WATCHDOG=1" and t < thawed_at)
        assert rig.stop(proc) == 0
        assert during == 0, during
        assert notify.count("READY=1") == 1 and notify.count("STOPPING=1") == 1
        statuses = [m for _, m in notify.messages if m.startswith("STATUS=")]
        assert any("videos ok 4" in s for s in statuses), statuses
        assert any("stalled: " in s for s in statuses), statuses
        assert events(rig, "watchdog.withheld") and events(rig, "watchdog.resumed")
    finally:
        notify.close()
    record.__dict__.update(
        test="7 watchdog: loops hung 10 s (moto frozen)", runs=rig.runs, messages=len(keys),
        faults="consumer and drainer stuck in a receive; stall limit 4 s; WATCHDOG_USEC 1 s",
        lost=0, duplicates=0,
        notes=f"{healthy} pings while healthy, {during} from the stall report to the thaw, "
              f"resumed after it; READY=1 once, STATUS with counts and 'stalled', STOPPING=1")
