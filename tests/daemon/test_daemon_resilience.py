"""Outages, the results dir failing, gone objects, unknown results, redrive, graceful flush and the
systemd watchdog — in process, against the session's moto server and the fake Lambda."""

from __future__ import annotations

import errno
import itertools
import json
import threading
import time
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from daemon_helpers import queue_counts, s3_event
from fake_lambda import FakeLambda, function_error
from polling import wait_for
from structlog.testing import capture_logs

from lambda_service.net import free_port
from openstack_handler.cli import main
from openstack_handler.daemon.availability import MIN_WAIT_S, Availability
from openstack_handler.daemon.errors import ConfigError
from openstack_handler.daemon.handler import Handler
from openstack_handler.daemon.redrive import move_messages, reinvoke_failures
from openstack_handler.daemon.results_store import ResultsStore
from openstack_handler.daemon.settings import load_settings
from openstack_handler.daemon.systemd import Watchdog, watchdog_interval_s


def _events(logs: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [entry for entry in logs if entry.get("event") == name]


# -- availability and backoff --------------------------------------------------------------------

def test_availability_logs_each_state_change_once_and_backs_off_with_a_floor_and_cap() -> None:
    clock = [100.0]
    state = Availability("sqs_input", initial_s=0.5, cap_s=4.0, clock=lambda: clock[0],
                         rng=lambda: 1.0)
    with capture_logs() as logs:
        delays = [state.failed(OSError("refused")) for _ in range(6)]
        clock[0] += 30
        state.succeeded()
        state.succeeded()
    assert delays == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert [e["event"] for e in logs if e["log_level"] != "debug"] == [
        "sqs_input.unavailable", "sqs_input.recovered"]
    assert _events(logs, "sqs_input.recovered")[0]["down_s"] == 30.0
    assert Availability("x", rng=lambda: 0.0).failed("e") >= 0.2  # never a busy loop
    assert not state.down and state.outages == 1


# -- systemd watchdog ----------------------------------------------------------------------------

def test_watchdog_interval_is_half_of_watchdog_usec_and_only_for_this_pid() -> None:
    assert watchdog_interval_s({}, 10) is None
    assert watchdog_interval_s({"WATCHDOG_USEC": "4000000"}, 10) == 2.0
    assert watchdog_interval_s({"WATCHDOG_USEC": "4000000", "WATCHDOG_PID": "10"}, 10) == 2.0
    assert watchdog_interval_s({"WATCHDOG_USEC": "4000000", "WATCHDOG_PID": "11"}, 10) is None
    assert watchdog_interval_s({"WATCHDOG_USEC": "soon"}, 10) is None


def test_watchdog_pings_at_its_interval_and_stops_while_a_loop_is_stalled() -> None:
    clock = [0.0]
    sent: list[str] = []
    dog = Watchdog(interval_s=1.0, socket_path="/run/fake", clock=lambda: clock[0],
                   send=lambda msg, socket_path: sent.append(msg) or True)
    with capture_logs() as logs:
        for _ in range(30):  # 3 s of healthy main-loop ticks
            dog.tick()
            clock[0] += 0.1
        healthy = len(sent)
        for _ in range(30):  # 3 s with the consumer stuck
            dog.tick(["consumer"])
            clock[0] += 0.1
        stalled = len(sent) - healthy
        for _ in range(5):
            dog.tick()
            clock[0] += 0.1
    assert healthy == 3 and stalled == 0 and len(sent) == 4
    assert set(sent) == {"WATCHDOG=1"}
    assert [e["event"] for e in logs] == ["watchdog.withheld", "watchdog.resumed"]
    assert not Watchdog(interval_s=None, socket_path="/run/fake").tick()


def test_a_loop_that_stops_turning_withholds_the_watchdog_until_it_turns_again(
        tmp_path: Path, queues, boto_session: boto3.session.Session) -> None:
    # GIVEN the daemon wired up (not running) with a stall limit of 5 s, and a watchdog that is
    # due a ping on every tick
    settings = load_settings(None, env={}, input_queue_url=queues.input,
                             output_queue_url=queues.output, function_name="f",
                             results_dir=str(tmp_path / "results"),
                             state_dir=str(tmp_path / "state"), stall_timeout_s=5)
    handler = Handler(settings, session=boto_session)
    sent: list[str] = []
    handler.watchdog = Watchdog(interval_s=1e-6, socket_path="/run/fake",
                                send=lambda message, socket_path: sent.append(message) or True)
    try:
        now = time.monotonic()
        handler.consumer.last_progress = handler.drainer.last_progress = now
        # THEN a loop counts as stalled only once it has not turned for longer than the limit
        assert handler.stalled_loops(now + 4.9) == []
        assert handler.stalled_loops(now + 5.1) == ["consumer", "drainer"]
        # WHEN the consumer's loop has not turned for a minute (the drainer's just did)
        handler.consumer.last_progress = time.monotonic() - 60
        handler.drainer.last_progress = time.monotonic()
        handler.main_loop_tick()
        # THEN no ping goes out, and the status says which loop is stuck
        assert sent == [] and handler.watchdog.withheld_for == ("consumer",)
        assert "stalled: consumer" in handler.problems()
        # WHEN it turns again THEN the pings resume
        handler.consumer.last_progress = time.monotonic()
        handler.main_loop_tick()
        assert sent == ["WATCHDOG=1"] and handler.problems() == []
    finally:
        handler.state.close()


# -- SQS outage ----------------------------------------------------------------------------------

def _dead_sqs() -> tuple[Any, list[float]]:
    """An SQS client whose endpoint refuses connections, and the start times of its receives."""
    dead = boto3.client("sqs", endpoint_url=f"http://127.0.0.1:{free_port('127.0.0.1')}",
                        config=Config(retries={"mode": "standard", "max_attempts": 1},
                                      connect_timeout=1))
    tries: list[float] = []
    original = dead.receive_message

    def counting(**kwargs: Any) -> Any:
        tries.append(time.monotonic())
        return original(**kwargs)

    dead.receive_message = counting
    return dead, tries


def _assert_waited_between(tries: list[float]) -> None:
    """No spinning: consecutive tries are at least the outage backoff's floor apart (a loaded
    machine only makes the gaps longer)."""
    gaps = [later - earlier for earlier, later in itertools.pairwise(tries)]
    assert gaps and min(gaps) >= MIN_WAIT_S - 0.01, gaps


def test_sqs_outage_is_logged_once_waited_out_without_spinning_and_recovered(
        make_consumer, sqs, queues, fake_lambda: FakeLambda) -> None:
    # GIVEN a consumer whose SQS endpoint refuses connections
    dead, tries = _dead_sqs()
    consumer = make_consumer(sqs=dead, outage_backoff_max_s=1.0)
    sqs.send_message(QueueUrl=queues.input, MessageBody=json.dumps(s3_event("videos", "v.mp4")))
    stop = threading.Event()
    with capture_logs() as logs:
        thread = threading.Thread(target=consumer.run, args=(stop,), daemon=True)
        thread.start()
        wait_for(lambda: len(tries) >= 4, timeout_s=30, what="four tries while SQS is down")
        # WHEN SQS comes back
        consumer.sqs = consumer.deleter.sqs = consumer.receiver.sqs = sqs  # every SQS call
        wait_for(lambda: queue_counts(sqs, queues.input) == (0, 0), timeout_s=30,
                 what="the video processed")
        stop.set()
        thread.join(timeout=10)
    # THEN it waited between tries instead of spinning; one line when it went down and one
    # when it came back
    _assert_waited_between(tries)
    assert len(_events(logs, "sqs_input.unavailable")) == 1
    assert len(_events(logs, "sqs_input.recovered")) == 1
    assert not _events(logs, "consumer.poll_failed")
    assert queue_counts(sqs, queues.input) == (0, 0) and len(fake_lambda.calls) == 1
    assert consumer.first_poll.is_set()


def test_the_drainer_waits_out_an_sqs_outage_and_then_writes_the_results(
        make_drainer, sqs, queues, store: ResultsStore) -> None:
    # GIVEN a result on the output queue, and a drainer whose SQS endpoint refuses connections
    sqs.send_message(QueueUrl=queues.output, MessageBody=_result_body("dir/v.mp4"))
    dead, tries = _dead_sqs()
    drainer = make_drainer(sqs=dead, outage_backoff_max_s=1.0)
    stop = threading.Event()
    with capture_logs() as logs:
        thread = threading.Thread(target=drainer.run, args=(stop,), daemon=True)
        thread.start()
        wait_for(lambda: len(tries) >= 4, timeout_s=30, what="four tries while SQS is down")
        # WHEN SQS comes back
        drainer.sqs = drainer.receiver.sqs = sqs  # every SQS call
        wait_for(lambda: queue_counts(sqs, queues.output) == (0, 0), timeout_s=30,
                 what="the result written and deleted")
        stop.set()
        thread.join(timeout=10)
    # THEN the same drainer waited (no spinning, no crash), logged the outage once each way,
    # and wrote the result once SQS answered
    assert not thread.is_alive()
    _assert_waited_between(tries)
    assert len(_events(logs, "sqs_output.unavailable")) == 1
    assert len(_events(logs, "sqs_output.recovered")) == 1
    assert not _events(logs, "drainer.poll_failed")
    assert (store.root / "dir" / "v.csv").read_text() == "mr_bean,lawyer,freshmen\n"


# -- results dir unwritable or full --------------------------------------------------------------

def _result_body(key: str) -> str:
    return json.dumps({"schema": 1, "status": "ok", "request_id": "r", "bucket": "videos",
                       "key": key, "etag": "e", "csv": "mr_bean,lawyer,freshmen\n"})


@pytest.mark.parametrize("failure", ["full", "unwritable"])
def test_results_dir_failure_keeps_messages_and_recovers_when_the_disk_does(
        failure: str, make_drainer, sqs, queues, store: ResultsStore,
        monkeypatch: pytest.MonkeyPatch) -> None:
    for i in range(3):
        sqs.send_message(QueueUrl=queues.output, MessageBody=_result_body(f"dir/v{i}.mp4"))
    # GIVEN a results dir that fails: ENOSPC on every write, or a file where the dir should be
    if failure == "full":
        def no_space(self: ResultsStore, *args: Any, **kwargs: Any) -> Any:
            raise OSError(errno.ENOSPC, "No space left on device", str(self.root))

        monkeypatch.setattr(ResultsStore, "_write_result", no_space)
        monkeypatch.setattr(ResultsStore, "probe", lambda self: no_space(self))
    else:
        store.root.parent.mkdir(parents=True, exist_ok=True)
        store.root.write_text("not a directory")
    drainer = make_drainer(outage_backoff_max_s=1.0)
    receives_while_down: list[int] = []
    drainer.sqs.meta.events.register(
        "before-call.sqs.ReceiveMessage",
        lambda **_: receives_while_down.append(1) if drainer.disk_state.down else None)
    stop = threading.Event()
    with capture_logs() as logs:
        thread = threading.Thread(target=drainer.run, args=(stop,), daemon=True)
        thread.start()
        # WHEN a write has failed and then three probes of the dir
        wait_for(lambda: drainer.disk_state.failures >= 4, timeout_s=30,
                 what="a failed write and three failed probes")
        # THEN nothing is deleted, and not one receive was made while the dir was down (each
        # would count towards the output queue's maxReceiveCount)
        assert sum(queue_counts(sqs, queues.output)) == 3
        assert receives_while_down == []
        # WHEN the disk recovers
        if failure == "full":
            monkeypatch.undo()
        else:
            store.root.unlink()
        wait_for(lambda: queue_counts(sqs, queues.output) == (0, 0), timeout_s=30,
                 what="the held results written and deleted")
        stop.set()
        thread.join(timeout=10)
    down = _events(logs, "results_dir.unavailable")
    assert len(down) == 1 and down[0]["error_type"] in ("OSError", "NotADirectoryError",
                                                        "FileExistsError")
    if failure == "full":
        assert "No space left on device" in down[0]["error"]
    assert len(_events(logs, "results_dir.recovered")) == 1
    assert sorted(p.name for p in (store.root / "dir").iterdir()) == ["v0.csv", "v1.csv", "v2.csv"]
    assert not [p for p in store.root.rglob(".tmp-*")]


# -- bad input that needs the daemon's judgement -------------------------------------------------

def test_object_deleted_before_processing_gets_an_error_file_and_is_acknowledged(
        make_consumer, sqs, queues, fake_lambda: FakeLambda, store: ResultsStore) -> None:
    fake_lambda.behaviour = lambda name, payload: function_error(
        "NoSuchKey", "An error occurred (NoSuchKey) when calling the GetObject operation")
    sqs.send_message(QueueUrl=queues.input,
                     MessageBody=json.dumps(s3_event("videos", "gone/clip.mp4")))
    with capture_logs() as logs:
        stats = make_consumer().run(max_messages=1, max_idle=1)
    assert stats.gone == 1 and queue_counts(sqs, queues.input) == (0, 0)
    assert (store.root / "gone" / "clip.error").read_text().startswith(
        "ObjectGone: s3://videos/gone/clip.mp4")
    assert [e["status"] for e in _events(logs, "video.processed")] == ["gone"]


def test_result_for_an_unknown_video_is_written_with_a_log_line(make_drainer, sqs, queues,
                                                                store: ResultsStore) -> None:
    sqs.send_message(QueueUrl=queues.output, MessageBody=_result_body("stranger.mp4"))
    with capture_logs() as logs:
        stats = make_drainer(is_known=lambda bucket, key, etag: False).run(max_messages=1,
                                                                           max_idle=1)
    assert stats.unknown == 1 and (store.root / "stranger.csv").exists()
    assert len(_events(logs, "result.for_unknown_video")) == 1  # key: bound as context


def test_consumer_knows_claimed_and_processed_videos(make_consumer, state) -> None:
    consumer = make_consumer()
    state.mark_processed("videos", "done.mp4", "e1", status="ok")
    assert consumer.knows("videos", "done.mp4", '"e1"')
    assert not consumer.knows("videos", "done.mp4", "other")
    assert not consumer.knows("videos", "never.mp4", "e1")


# -- graceful stop: the drainer writes what the daemon owes --------------------------------------

def _owe(state, *keys: str) -> None:
    """As the consumer does: expected before the invocation, owed once it succeeded."""
    state.expect_results(("videos", key, "e") for key in keys)
    for key in keys:
        assert state.owe_result("videos", key, "e", request_id=f"req-{key}")


def test_the_flush_writes_every_owed_result_even_one_that_shows_up_late(
        make_drainer, sqs, queues, state, store: ResultsStore) -> None:
    # GIVEN 13 results owed: 12 on the output queue, and one sent a little after its invocation
    # returned (delivery delay 2 s: every receive until then comes back empty)
    keys = [f"f{i}.mp4" for i in range(13)]
    _owe(state, *keys)
    for key in keys[:12]:
        sqs.send_message(QueueUrl=queues.output, MessageBody=_result_body(key))
    sqs.send_message(QueueUrl=queues.output, MessageBody=_result_body(keys[12]), DelaySeconds=2)
    stop = threading.Event()
    stop.set()  # stopped before its first poll: only the flush runs
    drainer = make_drainer()
    drainer.run(stop)
    # WHEN it flushes, THEN it waits for the late one instead of ending on an empty receive
    started = time.monotonic()
    assert drainer.flush(timeout_s=10) == []
    assert time.monotonic() - started >= 1.0
    assert drainer.stats.deleted == 13 and len(list(store.root.glob("*.csv"))) == 13
    assert queue_counts(sqs, queues.output) == (0, 0)
    assert state.owed_results() == []


def test_the_flush_names_what_is_still_missing_when_its_time_is_up(
        make_drainer, sqs, queues, state, store: ResultsStore) -> None:
    _owe(state, "here.mp4", "never sent.mp4")
    sqs.send_message(QueueUrl=queues.output, MessageBody=_result_body("here.mp4"))
    with capture_logs() as logs:
        started = time.monotonic()
        missing = make_drainer().flush(timeout_s=2)
        elapsed = time.monotonic() - started
    assert [(o.key, o.request_id) for o in missing] == [("never sent.mp4", "req-never sent.mp4")]
    assert 2.0 <= elapsed < 4.5
    (line,) = _events(logs, "drainer.results_missing")
    assert line["count"] == 1 and line["missing"] == [
        {"bucket": "videos", "key": "never sent.mp4", "etag": "e",
         "request_id": "req-never sent.mp4"}]
    assert (store.root / "here.csv").exists()


def test_with_nothing_owed_the_flush_returns_at_once(make_drainer, sqs, queues, state) -> None:
    sqs.send_message(QueueUrl=queues.output, MessageBody=_result_body("not owed.mp4"))
    started = time.monotonic()
    assert make_drainer().flush(timeout_s=10) == []
    assert time.monotonic() - started < 0.5
    assert queue_counts(sqs, queues.output) == (1, 0)  # left for the next start


# -- redrive -------------------------------------------------------------------------------------

def test_move_messages_sends_back_body_and_attributes_then_deletes(sqs, queues) -> None:
    for i in range(12):
        sqs.send_message(QueueUrl=queues.input_dlq, MessageBody=f"body {i}", MessageAttributes={
            "origin": {"DataType": "String", "StringValue": f"o{i}"}})
    result = move_messages(sqs, queues.input_dlq, queues.input)
    assert (result.moved, result.failed, result.ok) == (12, 0, True)
    assert queue_counts(sqs, queues.input_dlq) == (0, 0)
    got = []
    while batch := sqs.receive_message(QueueUrl=queues.input, MaxNumberOfMessages=10,
                                       MessageAttributeNames=["All"]).get("Messages"):
        got += [(m["Body"], m["MessageAttributes"]["origin"]["StringValue"]) for m in batch]
    assert sorted(got) == sorted((f"body {i}", f"o{i}") for i in range(12))


def test_failure_records_are_invoked_again_and_unreadable_ones_stay(sqs, queues) -> None:
    # GIVEN serverless mode's failure queue holding two of Lambda's records and one that is not
    event = {"Records": [{"eventName": "ObjectCreated:Put", "s3": {
        "bucket": {"name": "in"}, "object": {"key": "a.mp4"}}}]}
    for body in (json.dumps({"requestContext": {"condition": "RetriesExhausted"},
                             "requestPayload": event}),
                 json.dumps({"requestPayload": {**event, "n": 2}}), "not json"):
        sqs.send_message(QueueUrl=queues.input_dlq, MessageBody=body)

    class Lambda:  # the Event invoke's answer (a fake: the real path is tests/integration)
        def __init__(self) -> None:
            self.calls: list[tuple[str, str, dict[str, Any]]] = []

        def invoke(self, *, FunctionName: str, InvocationType: str,
                   Payload: bytes) -> dict[str, Any]:
            self.calls.append((FunctionName, InvocationType, json.loads(Payload)))
            return {"StatusCode": 202}

    lam = Lambda()
    # WHEN they are redriven
    result = reinvoke_failures(sqs, lam, queues.input_dlq, "face-recognition", limit=3)
    # THEN each readable record's event went back to the function asynchronously
    assert (result.moved, result.failed, result.ok) == (2, 1, False)
    assert sorted(json.dumps(c[2]) for c in lam.calls) == sorted(
        [json.dumps(event), json.dumps({**event, "n": 2})])
    assert {c[:2] for c in lam.calls} == {("face-recognition", "Event")}
    # AND the unreadable one is still there (hidden while it was looked at)
    assert queue_counts(sqs, queues.input_dlq) == (0, 1)


def test_move_messages_does_not_end_on_an_empty_receive_while_the_dlq_counts_messages(
        sqs, queues) -> None:
    # GIVEN a DLQ whose first receive comes back empty although it holds 3 messages (SQS may
    # answer so: a receive samples its servers)
    for i in range(3):
        sqs.send_message(QueueUrl=queues.input_dlq, MessageBody=f"body {i}")

    class FirstReceiveEmpty:
        def __init__(self, client: Any) -> None:
            self.client, self.receives = client, 0

        def receive_message(self, **params: Any) -> dict[str, Any]:
            self.receives += 1
            return {} if self.receives == 1 else self.client.receive_message(**params)

        def __getattr__(self, name: str) -> Any:
            return getattr(self.client, name)

    # WHEN they are redriven, THEN all three move
    result = move_messages(FirstReceiveEmpty(sqs), queues.input_dlq, queues.input, wait_time_s=0)
    assert (result.moved, result.failed) == (3, 0)
    assert queue_counts(sqs, queues.input_dlq) == (0, 0)
    assert queue_counts(sqs, queues.input) == (3, 0)


def test_redrive_command_moves_each_queue_and_status_points_at_it(
        tmp_path: Path, sqs, queues, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "handler.toml"
    config.write_text(f'input_queue_url = "{queues.input}"\noutput_queue_url = "{queues.output}"\n'
                      f'function_name = "f"\nstate_dir = "{tmp_path / "state"}"\n')
    sqs.send_message(QueueUrl=queues.input_dlq, MessageBody="poison")
    sqs.send_message(QueueUrl=queues.output_dlq, MessageBody="not json")
    assert main(["status", "--config", str(config)]) == 0
    assert "openstack-handler redrive --queue input" in capsys.readouterr().out
    # the DLQs are found through the redrive policies (not configured)
    assert main(["redrive", "--config", str(config)]) == 0
    assert "input: moved 1 message(s)" in capsys.readouterr().out
    assert queue_counts(sqs, queues.input) == (1, 0) and queue_counts(sqs, queues.output_dlq)[0] == 1
    assert main(["redrive", "--config", str(config), "--queue", "both"]) == 0
    out = capsys.readouterr().out
    assert "input: moved 0" in out and "output: moved 1" in out
    assert queue_counts(sqs, queues.output) == (1, 0)


def test_redrive_that_cannot_read_the_dlq_says_why_instead_of_moving_0(
        tmp_path: Path, sqs, queues, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    # GIVEN a dead letter, and a shell without AWS credentials
    config = tmp_path / "handler.toml"
    config.write_text(f'input_queue_url = "{queues.input}"\noutput_queue_url = "{queues.output}"\n'
                      f'input_dlq_url = "{queues.input_dlq}"\n'
                      f'function_name = "f"\nstate_dir = "{tmp_path / "state"}"\n')
    sqs.send_message(QueueUrl=queues.input_dlq, MessageBody="poison")
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                 "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    # WHEN redrive runs, THEN it exits 69 naming the cause, not "moved 0" with 0
    assert main(["redrive", "--config", str(config)]) == 69
    captured = capsys.readouterr()
    assert "input: no AWS credentials to call SQS" in captured.err and "moved" not in captured.out
    assert queue_counts(sqs, queues.input_dlq)[0] == 1


def test_grace_period_must_be_shorter_than_the_visibility_timeout() -> None:
    base = {"input_queue_url": "i", "output_queue_url": "o", "function_name": "f"}
    with pytest.raises(ConfigError, match="shorter than visibility_timeout_s"):
        load_settings(None, env={}, **base, grace_period_s=90, visibility_timeout_s=90)
    settings = load_settings(None, env={}, **base, wait_time_s=20)
    assert settings.sqs_read_timeout_s == 30 and settings.stall_limit_s > 100
    assert load_settings(None, env={}, **base, stall_timeout_s=5).stall_limit_s == 5.0
