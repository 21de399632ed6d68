"""The input consumer against moto SQS and the FAKE Lambda endpoint (see fake_lambda.py)."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import pytest
from daemon_helpers import FUNCTION, queue_counts, s3_event
from fake_lambda import FakeLambda, Reply, function_error, ok, throttled, unavailable
from polling import wait_for
from structlog.testing import capture_logs

from openstack_handler.daemon.results_store import ResultsStore
from openstack_handler.daemon.state import StateDB


def send(sqs: Any, url: str, body: Any) -> str:
    text = body if isinstance(body, str) else json.dumps(body)
    return sqs.send_message(QueueUrl=url, MessageBody=text)["MessageId"]


def test_success_invokes_once_and_deletes(make_consumer, sqs, queues, fake_lambda: FakeLambda,
                                          state: StateDB) -> None:
    send(sqs, queues.input, s3_event("videos", "dir/my clip.mp4", etag="e1"))
    stats = make_consumer().run(max_messages=1, max_idle=1)
    assert [name for name, _ in fake_lambda.calls] == [FUNCTION]
    (record,) = fake_lambda.calls[0][1]["Records"]
    assert record["s3"]["object"]["key"] == "dir/my+clip.mp4"  # the raw event, as S3 sent it
    assert stats.deleted == 1 and stats.succeeded == 1
    assert queue_counts(sqs, queues.input) == (0, 0)
    assert state.is_processed("videos", "dir/my clip.mp4", "e1")
    assert state.snapshot().counters["videos_ok"] == 1


def test_function_error_leaves_the_message_for_redelivery(make_consumer, sqs, queues,
                                                          fake_lambda: FakeLambda,
                                                          state: StateDB) -> None:
    fake_lambda.behaviour = lambda name, payload: function_error("RuntimeError", "model broke")
    send(sqs, queues.input, s3_event("videos", "v.mp4"))
    stats = make_consumer().run(max_messages=1, max_idle=1)
    assert stats.failed == 1 and stats.deleted == 0
    assert queue_counts(sqs, queues.input) == (0, 1)  # still there, invisible until the timeout
    assert not state.is_processed("videos", "v.mp4", "0123abcd")
    snap = state.snapshot()
    assert "model broke" in (snap.last_error or "") and snap.last_error_source == "function"


def test_throttling_then_success_retries_and_deletes(make_consumer, sqs, queues,
                                                     fake_lambda: FakeLambda) -> None:
    replies = iter([throttled()])
    fake_lambda.behaviour = lambda name, payload: next(replies, None) or ok(payload)
    send(sqs, queues.input, s3_event("videos", "v.mp4"))
    stats = make_consumer().run(max_messages=1, max_idle=1)
    assert len(fake_lambda.calls) == 2
    assert stats.deleted == 1
    assert queue_counts(sqs, queues.input) == (0, 0)


def test_exhausted_throttling_offers_the_message_again_soon_not_after_the_visibility_timeout(
        make_consumer, sqs, queues, fake_lambda: FakeLambda, state: StateDB) -> None:
    # GIVEN a function that throttles every attempt of the first delivery, then recovers
    throttle = threading.Event()
    throttle.set()
    fake_lambda.behaviour = lambda name, payload: throttled() if throttle.is_set() else ok(payload)
    send(sqs, queues.input, s3_event("videos", "busy.mp4", etag="b1"))
    # WHEN the consumer gives up on this delivery (visibility timeout far longer than the test)
    stats = make_consumer(visibility_timeout_s=300).run(max_messages=1, max_idle=1)
    assert stats.failed == 1 and stats.deleted == 0
    assert not state.is_processed("videos", "busy.mp4", "b1")
    # THEN the message is visible again within the short retry backoff (first window: 2 s) ...
    throttle.clear()
    deadline = time.monotonic() + 5
    while queue_counts(sqs, queues.input)[0] == 0 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert queue_counts(sqs, queues.input) == (1, 0)
    # ... and the next delivery completes it
    again = make_consumer().run(max_messages=1, max_idle=1)
    assert again.deleted == 1 and state.is_processed("videos", "busy.mp4", "b1")


def test_duplicates_are_invoked_once_also_after_a_restart(make_consumer, sqs, queues,
                                                          fake_lambda: FakeLambda) -> None:
    # GIVEN the same upload delivered twice (moto sends two events for one multipart upload)
    fake_lambda.behaviour = lambda name, payload: (time.sleep(0.3), ok(payload))[1]
    for _ in range(2):
        send(sqs, queues.input, s3_event("videos", "dup.mp4", etag="same"))
    # WHEN one consumer receives both
    stats = make_consumer().run(max_messages=2, max_idle=1)
    # THEN the function runs once and both messages are acknowledged
    assert len(fake_lambda.calls) == 1
    assert stats.duplicates == 1 and stats.deleted == 2
    # AND a later redelivery (a new consumer: the daemon restarted) is acknowledged from the DB
    send(sqs, queues.input, s3_event("videos", "dup.mp4", etag="same"))
    again = make_consumer().run(max_messages=1, max_idle=1)
    assert len(fake_lambda.calls) == 1 and again.duplicates == 1 and again.deleted == 1
    # AND a re-upload (new eTag) is a new video
    send(sqs, queues.input, s3_event("videos", "dup.mp4", etag="new"))
    make_consumer().run(max_messages=1, max_idle=1)
    assert len(fake_lambda.calls) == 2
    assert queue_counts(sqs, queues.input) == (0, 0)


def test_when_the_first_of_two_duplicates_fails_it_comes_back_and_carries_the_video(
        make_consumer, sqs, queues, fake_lambda: FakeLambda, state: StateDB) -> None:
    # GIVEN the same upload delivered twice, and a function whose first run fails, but only
    # after the second delivery has been dropped as a duplicate of the first
    with capture_logs() as logs:
        def behaviour(name: str, payload: dict[str, Any]) -> Any:
            if len(fake_lambda.calls) > 1:
                return ok(payload)
            wait_for(lambda: any(e["event"] == "input.duplicate_dropped" for e in logs),
                     timeout_s=30, what="the duplicate dropped")
            return function_error("RuntimeError", "model broke")

        fake_lambda.behaviour = behaviour
        for _ in range(2):
            send(sqs, queues.input, s3_event("videos", "dup.mp4", etag="same"))
        # WHEN the consumer works until the first delivery (the carrier) has come back once
        stats = make_consumer(visibility_timeout_s=2).run(max_messages=3, max_idle=30)
    # THEN the duplicate was acknowledged, the carrier was not: it returned after its visibility
    # timeout and its second run made the video, which was invoked twice in all, never at once
    assert (stats.duplicates, stats.failed, stats.succeeded, stats.deleted) == (1, 1, 1, 2)
    assert len(fake_lambda.calls) == 2 and fake_lambda.max_active == 1
    assert state.is_processed("videos", "dup.mp4", "same")
    assert queue_counts(sqs, queues.input) == (0, 0)


def test_a_too_large_object_whose_error_file_cannot_be_written_is_kept(
        make_consumer, sqs, queues, fake_lambda: FakeLambda, state: StateDB,
        tmp_path) -> None:
    # GIVEN a results dir that cannot be written (a file stands where its parent should be)
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    consumer = make_consumer(max_object_bytes=5_000, store=ResultsStore(blocker / "results"))
    # ... an oversized upload, and a message holding an oversized record and a good one
    send(sqs, queues.input, s3_event("videos", "huge.mp4", size=10_000))
    mixed = s3_event("videos", "huge too.mp4", size=10_000)
    mixed["Records"] += s3_event("videos", "fine.mp4", etag="f1")["Records"]
    send(sqs, queues.input, mixed)
    # WHEN the consumer rejects the oversized objects and cannot record that on disk
    stats = consumer.run(max_messages=2, max_idle=1)
    # THEN neither message is acknowledged (the rejection left nothing durable, so the message
    # must come back), though the good video of the second one was invoked
    assert stats.deleted == 0 and stats.too_large == 0
    assert queue_counts(sqs, queues.input) == (0, 2)
    assert not state.is_processed("videos", "huge.mp4", "0123abcd")
    assert not state.is_processed("videos", "huge too.mp4", "0123abcd")
    assert [[r["s3"]["object"]["key"] for r in p["Records"]] for _, p in fake_lambda.calls] == [
        ["fine.mp4"]]


def test_bad_input_never_stops_the_consumer(make_consumer, sqs, queues, fake_lambda: FakeLambda,
                                            store, state: StateDB) -> None:
    send(sqs, queues.input, {"Service": "Amazon S3", "Event": "s3:TestEvent", "Bucket": "videos"})
    send(sqs, queues.input, "this is not json")
    send(sqs, queues.input, {"no": "records"})
    send(sqs, queues.input, s3_event("videos", "gone.mp4", event_name="ObjectRemoved:Delete"))
    send(sqs, queues.input, s3_event("videos", "dir/huge clip.mp4", size=10_000))
    send(sqs, queues.input, s3_event("videos", "good.mp4"))
    stats = make_consumer(max_object_bytes=5_000).run(max_messages=6, max_idle=1)
    # Only the good video reaches the function.
    assert [p["Records"][0]["s3"]["object"]["key"] for _, p in fake_lambda.calls] == ["good.mp4"]
    assert (stats.test_events, stats.invalid, stats.skipped_events, stats.too_large) == (1, 2, 1, 1)
    # Test event, removed event, too-large and good are acknowledged; the two invalid bodies stay
    # for the dead-letter queue.
    assert stats.deleted == 4
    assert queue_counts(sqs, queues.input) == (0, 2)
    error_file = store.root / "dir" / "huge clip.error"
    assert "above max_object_bytes=5000" in error_file.read_text()
    assert state.snapshot().counters["input_invalid"] == 2


def test_concurrency_is_bounded_and_batches_fit_free_slots(make_consumer, sqs, queues,
                                                           fake_lambda: FakeLambda) -> None:
    fake_lambda.behaviour = lambda name, payload: (time.sleep(0.4), ok(payload))[1]
    for i in range(7):
        send(sqs, queues.input, s3_event("videos", f"v{i}.mp4"))
    consumer = make_consumer(concurrency=2)
    asked: list[int] = []
    consumer.sqs.meta.events.register(
        "provide-client-params.sqs.ReceiveMessage",
        lambda params, **kw: asked.append(params["MaxNumberOfMessages"]))
    stats = consumer.run(max_messages=7, max_idle=1)
    assert len(fake_lambda.calls) == 7 and stats.deleted == 7
    assert fake_lambda.max_active == 2  # never more than `concurrency` in flight, and it was used
    assert asked and max(asked) <= 2
    assert queue_counts(sqs, queues.input) == (0, 0)


def test_heartbeat_keeps_a_slow_video_invisible(make_consumer, sqs, queues,
                                                fake_lambda: FakeLambda) -> None:
    # GIVEN a visibility timeout of 2 s and an invocation that lasts until the test has looked
    looked = threading.Event()
    fake_lambda.behaviour = lambda name, payload: (looked.wait(30), ok(payload))[1]
    send(sqs, queues.input, s3_event("videos", "slow.mp4"))
    consumer = make_consumer(visibility_timeout_s=2)
    runner = threading.Thread(target=consumer.run, kwargs={"max_messages": 1, "max_idle": 1})
    runner.start()
    fake_lambda.wait_started()
    # WHEN another consumer polls after the original timeout has passed (and a beat since)
    time.sleep(2.8)
    wait_for(lambda: consumer.heartbeat.beats >= 2, timeout_s=10, what="two heartbeats")
    stolen = sqs.receive_message(QueueUrl=queues.input, WaitTimeSeconds=0).get("Messages", [])
    looked.set()
    runner.join(timeout=15)
    # THEN it got nothing: the heartbeat extended the visibility; the video ran once, was deleted
    assert stolen == []
    assert consumer.heartbeat.beats >= 2
    assert len(fake_lambda.calls) == 1 and consumer.stats.deleted == 1
    assert queue_counts(sqs, queues.input) == (0, 0)


def test_stop_releases_received_but_unstarted_messages(make_consumer, sqs, queues,
                                                       fake_lambda: FakeLambda) -> None:
    for i in range(3):
        send(sqs, queues.input, s3_event("videos", f"v{i}.mp4"))
    consumer = make_consumer()
    stop = threading.Event()
    # GIVEN a stop request that arrives while the receive call is in progress
    consumer.sqs.meta.events.register("after-call.sqs.ReceiveMessage",
                                      lambda **kw: stop.set())
    stats = consumer.run(stop)
    # THEN nothing was started and the messages are visible again at once
    assert fake_lambda.calls == []
    assert stats.received >= 1 and stats.released == stats.received
    assert queue_counts(sqs, queues.input) == (3, 0)


def test_stop_mid_run_lets_in_flight_invocations_finish(make_consumer, sqs, queues,
                                                        fake_lambda: FakeLambda) -> None:
    fake_lambda.behaviour = lambda name, payload: (time.sleep(1.0), ok(payload))[1]
    for i in range(3):
        send(sqs, queues.input, s3_event("videos", f"v{i}.mp4"))
    consumer = make_consumer(concurrency=2)
    stop = threading.Event()
    result: dict[str, Any] = {}
    runner = threading.Thread(target=lambda: result.update(stats=consumer.run(stop)))
    runner.start()
    fake_lambda.wait_started(2)
    stop.set()
    runner.join(timeout=10)
    assert not runner.is_alive()
    stats = result["stats"]
    # The two started invocations completed and their messages were deleted; the third was
    # never received (no free slot), so it is still waiting, visible.
    assert len(fake_lambda.calls) == 2 and stats.succeeded == 2 and stats.deleted == 2
    assert consumer.in_flight == 0
    assert queue_counts(sqs, queues.input) == (1, 0)


@pytest.mark.parametrize("succeeds", [True, False])
def test_redelivery_while_in_flight_is_not_started_twice(make_consumer, lean_queue,
                                                         fake_lambda: FakeLambda,
                                                         succeeds: bool) -> None:
    # On the lean SQS: there, as on SQS, a delete with an older receipt handle deletes nothing
    # (moto deletes with any receipt the message ever had, so it cannot tell the two apart).
    sqs, url = lean_queue
    # GIVEN a heartbeat too slow to keep the message hidden (visibility 1 s, a beat every 60 s)
    # and an invocation that lasts until the message has come back to this consumer
    reply = ok if succeeds else (lambda payload: function_error())
    with capture_logs() as logs:
        def slow(name: str, payload: dict[str, Any]) -> Any:
            wait_for(lambda: any(e["event"] == "input.redelivered_in_flight" for e in logs),
                     timeout_s=30, what="the redelivery while in flight")
            return reply(payload)

        fake_lambda.behaviour = slow
        send(sqs, url, s3_event("videos", "slow.mp4"))
        consumer = make_consumer(sqs=sqs, queue_url=url, visibility_timeout_s=1,
                                 heartbeat_interval_s=60, concurrency=2)
        # WHEN the same message comes back to this consumer mid-invocation
        stats = consumer.run(max_messages=2, max_idle=1)
    # THEN it is not invoked again and not acknowledged as a duplicate: it is deleted (with the
    # newest receipt handle, so the delete sticks) only if the one invocation succeeded
    assert stats.received == 2 and stats.duplicates == 0
    assert len(fake_lambda.calls) == 1
    assert sum(queue_counts(sqs, url)) == (0 if succeeds else 1)


def test_while_lambda_is_down_one_message_at_a_time_is_received(make_consumer, sqs, queues,
                                                                fake_lambda: FakeLambda,
                                                                state: StateDB) -> None:
    # GIVEN eight videos, and a function that will throttle every attempt until told otherwise
    # (the queue's maxReceiveCount raised from 3: each probe is one more receive of the message
    # it takes, and the same one may be taken by several probes)
    dlq_arn = sqs.get_queue_attributes(QueueUrl=queues.input_dlq, AttributeNames=["QueueArn"])[
        "Attributes"]["QueueArn"]
    sqs.set_queue_attributes(QueueUrl=queues.input, Attributes={"RedrivePolicy": json.dumps(
        {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": "20"})})
    release, recovered = threading.Event(), threading.Event()

    def behaviour(name: str, payload: dict[str, Any]) -> Any:
        release.wait(30)
        return ok(payload) if recovered.is_set() else throttled()

    fake_lambda.behaviour = behaviour
    for i in range(8):
        send(sqs, queues.input, s3_event("videos", f"v{i}.mp4", etag=f"e{i}"))
    consumer = make_consumer(concurrency=4, outage_backoff_max_s=1.0)
    asks: list[tuple[int, bool]] = []  # (MaxNumberOfMessages, Lambda down at that receive)

    def record(params: dict[str, Any], **_: Any) -> None:
        asks.append((params["MaxNumberOfMessages"], consumer.lambda_state.down))
        if sum(down for _, down in asks) == 3:
            recovered.set()  # Lambda comes back after the third receive made while it was down

    consumer.sqs.meta.events.register("provide-client-params.sqs.ReceiveMessage", record)
    stop = threading.Event()
    runner = threading.Thread(target=consumer.run, args=(stop,), daemon=True)
    runner.start()
    # WHEN all four slots are busy and their invocations come back throttled (Lambda is down)
    fake_lambda.wait_started(4)
    release.set()
    wait_for(lambda: all(state.is_processed("videos", f"v{i}.mp4", f"e{i}") for i in range(8)),
             timeout_s=60, what="every video processed once Lambda is back")
    stop.set()
    runner.join(timeout=15)
    assert queue_counts(sqs, queues.input) == (0, 0)
    # THEN every receive made while Lambda was down asked for one message (a probe), not for
    # the four free slots; once it answered again, receives asked for the free slots again
    while_down = [asked for asked, down in asks if down]
    assert asks[0] == (4, False)
    assert len(while_down) >= 3 and set(while_down) == {1}, asks
    last_down = max(i for i, (_, down) in enumerate(asks) if down)
    assert any(asked == 4 for asked, _ in asks[last_down + 1:]), asks
    assert consumer.stats.succeeded == 8 and not consumer.lambda_state.down


def test_a_lambda_outage_is_probed_with_dry_runs_and_no_message_nears_the_dlq(
        make_consumer, sqs, queues, fake_lambda: FakeLambda, state: StateDB) -> None:
    # GIVEN a queue that dead-letters a message on its fourth receive (one receive finds Lambda
    # down, a poll already under way as the outage begins may take it once more, and one
    # processes it), four videos, and a Lambda that answers every call with a 503, dry runs
    # included, until told otherwise
    dlq_arn = sqs.get_queue_attributes(QueueUrl=queues.input_dlq, AttributeNames=["QueueArn"])[
        "Attributes"]["QueueArn"]
    sqs.set_queue_attributes(QueueUrl=queues.input, Attributes={"RedrivePolicy": json.dumps(
        {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": "3"})})
    down = threading.Event()
    down.set()
    fake_lambda.behaviour = lambda name, payload: unavailable() if down.is_set() else ok(payload)
    fake_lambda.dry_run = lambda name: unavailable() if down.is_set() else Reply(204, b"")
    for i in range(4):
        send(sqs, queues.input, s3_event("videos", f"v{i}.mp4", etag=f"e{i}"))
    consumer = make_consumer(concurrency=4, outage_backoff_max_s=0.3)
    receives: list[int] = []  # the dry runs made before each receive

    def record(params: dict[str, Any], **_: Any) -> None:
        receives.append(fake_lambda.dry_runs)

    consumer.sqs.meta.events.register("provide-client-params.sqs.ReceiveMessage", record)
    stop = threading.Event()
    runner = threading.Thread(target=consumer.run, args=(stop,), daemon=True)
    runner.start()
    # WHEN the outage lasts for many more probes than the queue allows receives (a probe at
    # most every 0.3 s, at least every 0.2 s, and the invoker's retries: 8 or more in 4 s)
    fake_lambda.wait_started(4)
    time.sleep(4)
    down.clear()
    wait_for(lambda: all(state.is_processed("videos", f"v{i}.mp4", f"e{i}") for i in range(4)),
             timeout_s=30, what="every video processed once Lambda is back")
    stop.set()
    runner.join(timeout=15)
    # THEN nothing reached the dead-letter queue, every video ran once it was back, and while
    # the dry runs failed nothing was received: the receive after the first failed dry run
    # came only once one answered
    assert queue_counts(sqs, queues.input_dlq) == (0, 0)
    assert queue_counts(sqs, queues.input) == (0, 0)
    assert consumer.stats.succeeded == 4 and not consumer.lambda_state.down
    failed_dry_runs = fake_lambda.dry_runs - 1
    assert failed_dry_runs >= 6 and consumer.stats.probes == fake_lambda.dry_runs
    assert not any(0 < before <= failed_dry_runs for before in receives), receives


def test_a_dropped_duplicate_says_why_and_forget_has_it_processed_again(
        make_consumer, sqs, queues, fake_lambda: FakeLambda, state: StateDB) -> None:
    from structlog.testing import capture_logs

    # GIVEN a processed video
    send(sqs, queues.input, s3_event("videos", "dir/clip.mp4", etag="same"))
    make_consumer().run(max_messages=1, max_idle=1)
    # WHEN the same bytes are uploaded again (same eTag: a new event, the same identity)
    send(sqs, queues.input, s3_event("videos", "dir/clip.mp4", etag="same"))
    with capture_logs() as logs:
        stats = make_consumer(reprocess_hint="openstack-handler forget --config C {key}").run(
            max_messages=1, max_idle=1)
    # THEN it is dropped, visibly: a log line with the key, why, and how to reprocess it
    assert len(fake_lambda.calls) == 1 and stats.duplicates == 1
    (line,) = [entry for entry in logs if entry["event"] == "video.duplicate_dropped"]
    assert line["key"] == "dir/clip.mp4" and line["bucket"] == "videos"
    assert line["why"].startswith("already processed at ") and "same eTag" in line["why"]
    assert line["to_reprocess"] == "openstack-handler forget --config C dir/clip.mp4"
    dup = state.snapshot().last_duplicate
    assert dup is not None and (dup.key, dup.etag) == ("dir/clip.mp4", "same")
    # AND once forgotten, the next upload is processed again
    assert [r.etag for r in state.forget("dir/clip.mp4")] == ["same"]
    send(sqs, queues.input, s3_event("videos", "dir/clip.mp4", etag="same"))
    make_consumer().run(max_messages=1, max_idle=1)
    assert len(fake_lambda.calls) == 2


def test_a_failure_still_waits_out_the_visibility_timeout_not_the_short_receive_claim(
        make_consumer, sqs, queues, fake_lambda: FakeLambda) -> None:
    # GIVEN receives that claim messages for 2 s, and a visibility timeout of 8 s
    fake_lambda.behaviour = lambda name, payload: function_error("RuntimeError", "model broke")
    send(sqs, queues.input, s3_event("videos", "v.mp4"))
    failed_at = time.monotonic()
    make_consumer(visibility_timeout_s=8, receive_visibility_s=2).run(max_messages=1, max_idle=0.5)
    # WHEN the function fails THEN the message stays hidden past the claim ...
    time.sleep(max(0.0, failed_at + 4 - time.monotonic()))
    assert queue_counts(sqs, queues.input) == (0, 1)
    # ... and comes back once the visibility timeout has passed since it was received
    got = sqs.receive_message(QueueUrl=queues.input, WaitTimeSeconds=10)
    assert got.get("Messages") and time.monotonic() - failed_at >= 7
