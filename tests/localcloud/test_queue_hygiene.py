"""The shared-queue hygiene of the tiers that share one local cloud (tests/queue_hygiene.py), on
the real moto server: what a receive-until-empty loop missed is purged, and a test that leaves
messages fails loudly."""

from __future__ import annotations

from typing import Any

import pytest
from daemon_helpers import Queues
from queue_hygiene import SharedQueues, contents


def _shared(sqs: Any, queues: Queues) -> SharedQueues:
    return SharedQueues(sqs, {"input": queues.input, "output": queues.output,
                              "input DLQ": queues.input_dlq, "output DLQ": queues.output_dlq},
                        must_end_empty=("input", "output"))


def test_begin_empties_what_is_in_flight_and_delayed_too(sqs: Any, queues: Queues) -> None:
    # GIVEN what an earlier test left: a message a killed daemon held, one sent with a delay
    sqs.send_message(QueueUrl=queues.output, MessageBody="held")
    assert sqs.receive_message(QueueUrl=queues.output, VisibilityTimeout=60)["Messages"]
    sqs.send_message(QueueUrl=queues.output, MessageBody="late", DelaySeconds=30)
    sqs.send_message(QueueUrl=queues.input, MessageBody="visible")
    # (a receive now comes back empty on the output queue: the old cleanup's stopping rule)
    assert not sqs.receive_message(QueueUrl=queues.output, WaitTimeSeconds=0).get("Messages")
    assert contents(sqs, {"output": queues.output}) == {"output": {
        "ApproximateNumberOfMessages": 0, "ApproximateNumberOfMessagesNotVisible": 1,
        "ApproximateNumberOfMessagesDelayed": 1}}
    # WHEN the next test begins, THEN nothing is left
    _shared(sqs, queues).begin()
    assert contents(sqs, {"input": queues.input, "output": queues.output}) == {}


def test_a_test_that_leaves_messages_fails_and_the_next_one_still_starts_clean(
        sqs: Any, queues: Queues) -> None:
    shared = _shared(sqs, queues)
    shared.begin()
    sqs.send_message(QueueUrl=queues.input, MessageBody="left behind")
    sqs.send_message(QueueUrl=queues.output_dlq, MessageBody="a dead letter may stay")
    with pytest.raises(pytest.fail.Exception, match="left messages on the shared queues"):
        shared.end()
    assert contents(sqs, {"input": queues.input, "output DLQ": queues.output_dlq}) == {}
    shared.begin()  # nothing to purge: no purge (SQS allows one a minute per queue)
    sqs.send_message(QueueUrl=queues.input_dlq, MessageBody="only a dead letter")
    shared.end()  # dead-letter queues are emptied, not judged
    assert contents(sqs, {"input DLQ": queues.input_dlq}) == {}
