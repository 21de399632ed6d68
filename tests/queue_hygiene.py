"""The queues of a local cloud that several tests share (one cloud per session): each test starts on
empty queues and must leave its main queues empty, or it fails loudly, so that one failure never
fails another.

Emptying is PurgeQueue (of the queues that hold anything: SQS allows one purge a minute), which
removes what is visible, in flight and delayed alike. A loop that
receives until one receive comes back empty misses the last two: a message a killed daemon still
held, or one sent with a delay, survived it and reached the next test's daemon. An invocation that
a killed daemon left running in the Lambda service puts its result on the output queue after it
returns, so the function is waited out (no invocation running) before the queues are checked.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

import pytest
from botocore.exceptions import ClientError

from localcloud.cloud import LocalCloud

#: what a queue holds, by kind: visible, in flight (received, not deleted) and delayed
COUNTS = ("ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible",
          "ApproximateNumberOfMessagesDelayed")
#: the longest an invocation left running by a killed daemon may take to end (an injected timeout
#: holds a worker for the function's timeout)
IDLE_TIMEOUT_S = 60.0
#: SQS allows one PurgeQueue per queue in this many seconds
PURGE_INTERVAL_S = 60.0


def contents(sqs: Any, queues: Mapping[str, str]) -> dict[str, dict[str, int]]:
    """{name: {count: n}} of the *queues* (name -> URL) that hold anything."""
    held = {}
    for name, url in queues.items():
        attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=list(COUNTS))
        counts = {key: int(attributes["Attributes"].get(key, 0)) for key in COUNTS}
        if any(counts.values()):
            held[name] = counts
    return held


def wait_until_idle(cloud: LocalCloud, functions: Sequence[str | None] = (None,), *,
                    timeout_s: float = IDLE_TIMEOUT_S) -> None:
    """Until no invocation of *functions* (None: the video function) runs, seen twice 0.2 s
    apart (a request on its way to a worker is not counted as busy yet)."""
    deadline = time.monotonic() + timeout_s
    quiet = 0
    while quiet < 2:
        busy = {name or "video": int(cloud.function_stats(name).get("busy", 0))
                for name in functions}
        quiet = 0 if any(busy.values()) else quiet + 1
        if time.monotonic() > deadline:
            pytest.fail(f"invocations still running after {timeout_s} s: {busy}; the queues "
                        "cannot be emptied under them")
        time.sleep(0.2)


class SharedQueues:
    """One test's use of the shared queues: :meth:`begin` before it, :meth:`end` after it.

    *idle* waits until nothing that could still put messages on the queues runs (e.g.
    ``lambda: wait_until_idle(cloud)``)."""

    def __init__(self, sqs: Any, queues: Mapping[str, str], *, must_end_empty: Collection[str],
                 idle: Callable[[], None] = lambda: None) -> None:
        self.sqs = sqs
        self.queues = dict(queues)
        #: the queues a test must leave empty (dead-letter queues may keep what a test put there)
        self.must_end_empty = tuple(must_end_empty)
        self.idle = idle

    @classmethod
    def of(cls, cloud: LocalCloud, queues: Mapping[str, str], *, must_end_empty: Collection[str],
           functions: Sequence[str | None] = (None,)) -> SharedQueues:
        """The queues of *cloud*, waiting for its *functions* (None: the video function)."""
        return cls(cloud.session().client("sqs"), queues, must_end_empty=must_end_empty,
                   idle=lambda: wait_until_idle(cloud, functions))

    def begin(self) -> None:
        """Empty every queue, and check that they are."""
        self.idle()
        self._purge(contents(self.sqs, self.queues))
        held = contents(self.sqs, self.queues)
        if held:
            pytest.fail(f"the shared queues are not empty after a purge: {held}")

    def end(self) -> None:
        """After the test's daemons are gone: fail if it left anything on its main queues, then
        empty them all for the next test either way."""
        self.idle()
        held = contents(self.sqs, self.queues)
        self._purge(held)
        left = {name: counts for name, counts in held.items() if name in self.must_end_empty}
        if left:
            pytest.fail(f"the test left messages on the shared queues: {left} (purged, so that "
                        "the next test starts clean)")

    def _purge(self, held: Mapping[str, object]) -> None:
        """Purge the queues in *held*. SQS allows one purge of a queue a minute (moto enforces
        it too): only queues that hold something are purged, and a second purge within the
        minute waits for it."""
        for name in held:
            deadline = time.monotonic() + PURGE_INTERVAL_S + 5
            while True:
                try:
                    self.sqs.purge_queue(QueueUrl=self.queues[name])
                    break
                except ClientError as exc:
                    code = exc.response.get("Error", {}).get("Code", "")
                    if "PurgeQueueInProgress" not in code or time.monotonic() > deadline:
                        raise
                    time.sleep(1.0)


def video_path_queues(cloud: LocalCloud) -> SharedQueues:
    """The daemon's queues of *cloud* (input, output and their DLQs), left empty by a test."""
    p = cloud.provisioned
    return SharedQueues.of(cloud, {
        "input": p.input_queue_url, "output": p.output_queue_url,
        "input DLQ": p.input_dlq_url, "output DLQ": p.output_dlq_url},
        must_end_empty=("input", "output"))
