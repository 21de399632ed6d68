"""Placement: the burst rule and failover as a pure policy, the REPORT line, the targets'
settings and accounting; then the consumer placing real messages (moto) on two fake Lambda
endpoints, one of which goes down."""

from __future__ import annotations

import base64
import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from daemon_helpers import FUNCTION, queue_counts, s3_event
from fake_lambda import FakeLambda, ok, unavailable
from polling import wait_for

from openstack_handler.daemon.availability import Availability
from openstack_handler.daemon.consumer import InputConsumer
from openstack_handler.daemon.errors import ConfigError, InvokeUnavailable
from openstack_handler.daemon.invoker import LambdaInvoker, lambda_client_config
from openstack_handler.daemon.placement import Placement, Target
from openstack_handler.daemon.report import (
    InvocationReport,
    Pricing,
    parse_report,
    report_from_log_result,
)
from openstack_handler.daemon.settings import load_settings
from openstack_handler.daemon.state import StateDB
from openstack_handler.daemon.status import render_targets, target_lines

#: a REPORT line as AWS Lambda writes it (a cold start of a container image function)
AWS_TAIL = ("START RequestId: 6b1c7c1e-0f0e-4c55-9a51-2b1d3c4e5f60 Version: $LATEST\n"
            "END RequestId: 6b1c7c1e-0f0e-4c55-9a51-2b1d3c4e5f60\n"
            "REPORT RequestId: 6b1c7c1e-0f0e-4c55-9a51-2b1d3c4e5f60\tDuration: 1523.41 ms\t"
            "Billed Duration: 2311 ms\tMemory Size: 3008 MB\tMax Memory Used: 412 MB\t"
            "Init Duration: 787.11 ms\t\n")


# -- the REPORT line ------------------------------------------------------------------------

def test_an_aws_report_line_gives_billed_gb_seconds_and_the_cold_start() -> None:
    report = parse_report(AWS_TAIL)
    assert report == InvocationReport("6b1c7c1e-0f0e-4c55-9a51-2b1d3c4e5f60", 1523.41, 2311,
                                      3008, 412, 787.11)
    assert report.gb_seconds == pytest.approx(3008 / 1024 * 2.311)
    encoded = base64.b64encode(AWS_TAIL.encode()).decode()
    assert report_from_log_result(encoded) == report


def test_the_last_report_counts_and_a_tail_without_one_is_none() -> None:
    warm = AWS_TAIL.replace("\tInit Duration: 787.11 ms", "").replace("1523.41", "20.00") \
        .replace("2311", "20")
    assert parse_report(AWS_TAIL + warm).init_ms is None  # the second, warm one
    assert parse_report(AWS_TAIL + warm).billed_ms == 20
    assert parse_report("START RequestId: x\nEND RequestId: x\n") is None
    assert parse_report("REPORT RequestId: x\tDuration: fast ms\n") is None
    assert report_from_log_result("not base64!") is None
    assert report_from_log_result(None) is None


def test_pricing_is_per_gb_second_and_per_request() -> None:
    assert Pricing().cost(gb_seconds=1_000_000, requests=1_000_000) == pytest.approx(16.8667,
                                                                                     rel=1e-4)
    assert Pricing(0, 0).cost(gb_seconds=10, requests=10) == 0


# -- the policy -----------------------------------------------------------------------------

class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _targets(*slots: int, clock: _Clock) -> list[Target]:
    return [Target(name=f"t{i}", invoker=LambdaInvoker(client=None, function_name=FUNCTION),
                   slots=n, availability=Availability(f"t{i}", clock=clock, rng=lambda: 0.5))
            for i, n in enumerate(slots)]


def test_the_first_target_fills_before_any_burst_and_the_next_waits_burst_after_s() -> None:
    clock = _Clock()
    private, aws = _targets(2, 3, clock=clock)
    placement = Placement([private, aws], burst_after_s=5, clock=clock)
    # GIVEN room for the private slots and, since bursting is allowed, the later ones
    assert placement.room(waiting=0) == 5
    # WHEN messages arrive: the private target takes them while it has slots
    assert placement.take(0.0) is private and placement.take(0.0) is private
    # THEN a third waits until it has waited burst_after_s, then goes to the next target
    assert placement.take(4.9) is None
    assert placement.take(5.0) is aws
    assert placement.room(waiting=1) == 1  # aws has 2 free, one message already waits
    # and a freed private slot is taken before any further burst
    placement.release(private)
    assert placement.take(30.0) is private
    assert placement.burst_in(3.0) == 2.0


def test_without_a_burst_rule_the_next_target_takes_nothing_but_a_down_ones_work() -> None:
    clock = _Clock()
    private, aws = _targets(1, 3, clock=clock)
    placement = Placement([private, aws], burst_after_s=None, clock=clock)
    assert placement.room(waiting=0) == 1  # only the private slot: nothing is held to burst
    assert placement.take(0.0) is private
    assert placement.take(3600.0) is None and placement.burst_in(0.0) is None
    # WHEN the private target goes down, its work moves to the next one at once (failover)
    placement.release(private)
    placement.mark_down(private, InvokeUnavailable("connection refused"))
    assert placement.room(waiting=0) == 3
    assert placement.take(0.0) is aws


def test_a_down_target_is_probed_after_its_backoff_then_gets_one_message_then_its_slots(
) -> None:
    clock = _Clock()
    (only,) = _targets(4, clock=clock)
    placement = Placement([only], clock=clock)
    delay = placement.mark_down(only, InvokeUnavailable("503"))
    assert placement.all_down and placement.room(0) == 0 and placement.due_probes() == []
    assert placement.next_probe_in() == pytest.approx(delay)
    clock.now += delay
    assert placement.due_probes() == [only]
    placement.probed(only, InvokeUnavailable("still 503"))  # a failed dry run: backed off again
    assert placement.due_probes() == [] and only.counts.probes == 1
    clock.now += 60
    placement.probed(only, None)  # a dry run answered: one canary message
    assert not placement.all_down and placement.room(0) == 1
    assert placement.take(0.0) is only and placement.room(0) == 0
    placement.release(only)
    placement.mark_up(only)  # the canary's invocation succeeded: every slot again
    assert placement.room(0) == 4


# -- settings, accounting, status -----------------------------------------------------------

BASE = ('input_queue_url = "http://127.0.0.1:1/q/in"\noutput_queue_url = '
        '"http://127.0.0.1:1/q/out"\nfunction_name = "face-recognition"\n')


def test_targets_are_tables_in_the_settings_file(tmp_path: Path) -> None:
    path = tmp_path / "h.toml"
    path.write_text(BASE + 'burst_after_s = 5\n[[targets]]\nname = "private"\nslots = 4\n'
                    'endpoint_url = "http://10.0.0.5:9001"\nprice_per_gb_s = 0\n'
                    '[[targets]]\nname = "aws"\nslots = 32\n')
    settings = load_settings(path, env={})
    private, aws = settings.placement_targets
    assert (private.name, private.slots, private.endpoint_url, private.price_per_gb_s) == (
        "private", 4, "http://10.0.0.5:9001", 0.0)
    assert (aws.function_name, aws.endpoint_url, aws.price_per_gb_s) == (
        "face-recognition", None, 0.0000166667)
    assert settings.total_slots == 36 and settings.burst_after_s == 5.0
    # without targets: one, today's Lambda with `concurrency` slots
    plain = tmp_path / "plain.toml"
    plain.write_text(BASE + "concurrency = 3\n")
    (only,) = load_settings(plain, env={}).placement_targets
    assert (only.name, only.slots) == ("lambda", 3)


@pytest.mark.parametrize(("tables", "message"), [
    ('[[targets]]\nslots = 2\n', "every target needs a name"),
    ('[[targets]]\nname = "a"\nslot = 2\n', "unknown key(s) slot"),
    ('[[targets]]\nname = "a"\n[[targets]]\nname = "a"\n', "duplicate names"),
    ('[[targets]]\nname = "a b"\n', "letters, digits or '-'"),
    ('[[targets]]\nname = "a"\nslots = 0\n', "slots must be 1..1000"),
    ('[[targets]]\nname = "a"\nendpoint_url = "10.0.0.5:9001"\n', "http(s) URL"),
    ('concurrency = 4\n[[targets]]\nname = "a"\n', "concurrency (from"),
    ('burst_after_s = -1\n', "burst_after_s must be 0..3600"),
])
def test_bad_targets_are_refused_naming_what_to_fix(tmp_path: Path, tables: str,
                                                    message: str) -> None:
    path = tmp_path / "h.toml"
    path.write_text(BASE + tables)
    with pytest.raises(ConfigError) as caught:
        load_settings(path, env={})
    assert message in str(caught.value)


def test_status_shows_each_targets_share_percentiles_gb_seconds_and_what_was_saved(
        tmp_path: Path) -> None:
    path = tmp_path / "h.toml"
    path.write_text(BASE + '[[targets]]\nname = "private"\nprice_per_gb_s = 0\n'
                    'price_per_request = 0\n[[targets]]\nname = "aws"\n')
    settings = load_settings(path, env={})
    with StateDB(tmp_path / "state.sqlite3") as state:
        for ms in (1000, 2000, 3000):
            state.record_invocation("private", ok=True, duration_ms=ms - 0.5, billed_ms=ms,
                                    memory_mb=1024)
        state.record_invocation("aws", ok=True, duration_ms=999.5, billed_ms=1000,
                                memory_mb=2048)
        state.record_invocation("aws", ok=False, duration_ms=3.0)  # unreachable: not billed
        lines = target_lines(settings, state.target_totals())
    private, aws = lines
    assert (private.totals.invocations, private.totals.gb_seconds, private.cost) == (3, 6.0, 0)
    assert private.lambda_cost == pytest.approx(6 * 0.0000166667 + 3 * 0.0000002)
    assert (aws.totals.invocations, aws.totals.failures, aws.totals.gb_seconds) == (2, 1, 2.0)
    assert (private.totals.p50_ms, private.totals.p95_ms) == (1999.5, 2999.5)
    text = "\n".join(render_targets(lines))
    assert "private" in text and "60%" in text and "40%" in text
    assert f"${private.lambda_cost:.6f}" in text.splitlines()[-2]  # saved: private's Lambda cost


# -- the consumer on two endpoints ----------------------------------------------------------

def _target(boto_session: Any, name: str, fake: FakeLambda, slots: int) -> Target:
    client = boto_session.client("lambda", endpoint_url=fake.url, config=lambda_client_config(
        function_timeout_s=10, concurrency=slots))
    return Target(name=name, slots=slots, availability=Availability(name, cap_s=0.5),
                  invoker=LambdaInvoker(client=client, function_name=FUNCTION, max_attempts=2,
                                        backoff_initial_s=0.05, backoff_max_s=0.1))


def test_a_burst_goes_private_first_and_a_down_private_targets_work_moves_at_once(
        boto_session, sqs, queues, state: StateDB, store, fake_lambda: FakeLambda) -> None:
    # GIVEN a private endpoint (2 slots, 1 s a video) before "aws" (4 slots), burst after 0.5 s
    private = FakeLambda(lambda name, payload: (time.sleep(1.0), ok(payload))[1]).start()
    aws = fake_lambda
    try:
        placement = Placement([_target(boto_session, "private", private, 2),
                               _target(boto_session, "aws", aws, 4)], burst_after_s=0.5)
        consumer = InputConsumer(sqs=boto_session.client("sqs"), queue_url=queues.input,
                                 placement=placement, state=state, store=store, wait_time_s=1,
                                 visibility_timeout_s=30)
        for i in range(6):
            sqs.send_message(QueueUrl=queues.input,
                             MessageBody=json.dumps(s3_event("videos", f"a{i}.mp4", etag=f"a{i}")))
        stop = threading.Event()
        runner = threading.Thread(target=consumer.run, args=(stop,), daemon=True)
        runner.start()
        # WHEN six arrive at once: two run privately, the rest wait 0.5 s and burst
        wait_for(lambda: consumer.stats.succeeded == 6, timeout_s=30, what="the first six")
        first_private, first_aws = len(private.calls), len(aws.calls)
        # and then the private endpoint answers every call, dry runs too, with a 503
        private.behaviour = lambda name, payload: unavailable()
        private.dry_run = lambda name: unavailable()
        for i in range(4):
            sqs.send_message(QueueUrl=queues.input,
                             MessageBody=json.dumps(s3_event("videos", f"b{i}.mp4", etag=f"b{i}")))
        wait_for(lambda: consumer.stats.succeeded == 10, timeout_s=30, what="the next four")
        stop.set()
        runner.join(timeout=15)
    finally:
        private.stop()
    # THEN the private slots were used first, the overflow burst, and once private was down its
    # messages moved to aws without waiting for a visibility timeout
    assert first_private >= 2 and first_private + first_aws == 6, (first_private, first_aws)
    assert first_aws >= 1
    assert all(state.is_processed("videos", f"b{i}.mp4", f"b{i}") for i in range(4))
    assert len(aws.calls) - first_aws == 4
    assert consumer.stats.moved >= 1 and queue_counts(sqs, queues.input) == (0, 0)
    totals = {t.name: t for t in state.target_totals()}
    assert totals["private"].failures >= 1 and totals["aws"].failures == 0
    assert totals["private"].invocations - totals["private"].failures == first_private
