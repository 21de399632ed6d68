"""The output drainer against moto SQS: results → files, durable before delete, bad messages kept."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

import pytest
from daemon_helpers import queue_counts
from polling import wait_for

import openstack_handler.daemon.results_store as results_store_module
from openstack_handler.daemon.results_store import ResultsStore
from openstack_handler.daemon.state import StateDB


def result(key: str, *, status: str = "ok", csv: str = "president_trump,physics,junior\n",
           **extra: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {"schema": 1, "status": status, "request_id": "r-1",
                           "bucket": "videos", "key": key, "etag": "e", "version_id": None}
    if status == "ok":
        doc["csv"] = csv
        doc["output"] = {"bucket": "out", "key": key.rsplit(".", 1)[0] + ".csv"}
    else:
        doc["error"] = {"type": "InvalidVideo", "reason": "no video stream"}
    doc.update(extra)
    return doc


def send(sqs: Any, url: str, body: Any) -> None:
    sqs.send_message(QueueUrl=url, MessageBody=body if isinstance(body, str) else json.dumps(body))


def test_results_become_files_and_messages_are_deleted(make_drainer, sqs, queues,
                                                       store: ResultsStore,
                                                       state: StateDB) -> None:
    send(sqs, queues.output, result("dir/my clip.mp4"))
    send(sqs, queues.output, result("ünï/çødé 2.mp4", csv="unknown_person,,\n"))
    send(sqs, queues.output, result("../../escape.mp4", csv="no_persons_found,,\n"))
    send(sqs, queues.output, result("broken.mp4", status="error"))
    stats = make_drainer().run(max_messages=4, max_idle=1)
    assert (store.root / "dir" / "my clip.csv").read_text() == "president_trump,physics,junior\n"
    assert (store.root / "ünï" / "çødé 2.csv").read_text() == "unknown_person,,\n"
    assert (store.root / "__" / "__" / "escape.csv").read_text() == "no_persons_found,,\n"
    assert (store.root / "broken.error").read_text() == "InvalidVideo: no video stream\n"
    assert stats.deleted == 4 and stats.errors_written == 1
    assert queue_counts(sqs, queues.output) == (0, 0)
    assert state.snapshot().counters["results_written"] == 4


def test_redelivered_result_is_written_idempotently(make_drainer, sqs, queues,
                                                    store: ResultsStore) -> None:
    send(sqs, queues.output, result("v.mp4"))
    send(sqs, queues.output, result("v.mp4"))
    stats = make_drainer().run(max_messages=2, max_idle=1)
    assert (stats.written, stats.unchanged, stats.deleted) == (1, 1, 2)
    assert sorted(p.name for p in store.root.iterdir()) == ["v.csv"]


def test_file_is_durable_before_the_message_is_deleted(make_drainer, sqs, queues,
                                                       store: ResultsStore,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    store.root.mkdir()
    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        events.append("fsync")
        real_fsync(fd)

    def replace(*args: Any, **kwargs: Any) -> None:
        events.append("replace")
        real_replace(*args, **kwargs)

    monkeypatch.setattr(results_store_module.os, "fsync", fsync)
    monkeypatch.setattr(results_store_module.os, "replace", replace)
    drainer = make_drainer()
    drainer.sqs.meta.events.register(
        "before-call.sqs.DeleteMessageBatch",
        lambda **kw: events.append(
            "delete:" + (store.root / "v.csv").read_text()))
    send(sqs, queues.output, result("v.mp4", csv="a,,\n"))
    drainer.run(max_messages=1, max_idle=1)
    # file fsync → rename → directory fsync, and only then the delete (with the file complete)
    assert events == ["fsync", "replace", "fsync", "delete:a,,\n"]


@pytest.mark.parametrize("body", [
    "not json",
    json.dumps(["a list"]),
    json.dumps({"status": "ok", "csv": "a,,\n"}),  # no bucket/key: which video?
    json.dumps(result("v.mp4", status="sideways")),
    json.dumps(result("v.mp4", schema=99)),
    json.dumps({k: v for k, v in result("v.mp4").items() if k != "csv"}),
    json.dumps(result("/", csv="a,,\n")),  # no usable path component
])
def test_invalid_results_are_left_for_the_output_dlq(make_drainer, sqs, queues,
                                                     store: ResultsStore, state: StateDB,
                                                     body: str) -> None:
    send(sqs, queues.output, body)
    stats = make_drainer().run(max_messages=1, max_idle=1)
    assert stats.invalid == 1 and stats.deleted == 0
    assert queue_counts(sqs, queues.output) == (0, 1)  # not deleted: the redrive policy decides
    assert not store.root.exists() or not any(store.root.rglob("*.csv"))
    assert state.snapshot().last_error_source == "output"


def test_a_result_through_a_planted_symlink_is_left_for_the_dlq_and_creates_nothing_outside(
        make_drainer, sqs, queues, store: ResultsStore, tmp_path: Path) -> None:
    # GIVEN a symlink planted inside the results dir, pointing outside it
    outside = tmp_path / "outside"
    outside.mkdir()
    store.root.mkdir()
    os.symlink(outside, store.root / "link")
    # WHEN a result arrives for a key that leads through it, folders deep
    send(sqs, queues.output, result("link/a/b/v.mp4"))
    stats = make_drainer().run(max_messages=1, max_idle=1)
    # THEN it is not written, not deleted (the output DLQ gets it), and nothing appeared outside
    assert stats.invalid == 1 and stats.deleted == 0
    assert queue_counts(sqs, queues.output) == (0, 1)
    assert list(outside.iterdir()) == []


def test_a_failed_write_keeps_the_message(make_drainer, sqs, queues, tmp_path: Path,
                                          state: StateDB) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    drainer = make_drainer(store=ResultsStore(blocker / "results"))
    send(sqs, queues.output, result("v.mp4"))
    send(sqs, queues.output, "junk")
    stats = drainer.run(max_messages=2, max_idle=1)
    assert stats.write_failed == 1 and stats.deleted == 0
    assert queue_counts(sqs, queues.output) == (0, 2)


class _BurstWithinTheWindow(threading.Event):
    """A stop event for the drainer whose timed waits (its batch window) end only once the rest
    of the burst has been sent: the burst arrives within the window however slow the machine.
    It records the windows the drainer asked for."""

    def __init__(self, burst_sent: threading.Event) -> None:
        super().__init__()
        self.burst_sent = burst_sent
        self.windows: list[float] = []

    def wait(self, timeout: float | None = None) -> bool:
        if timeout is not None and not self.is_set():
            self.windows.append(timeout)
            self.burst_sent.wait(30)
            return self.is_set()
        return super().wait(timeout)


def test_a_partial_batch_lets_the_rest_of_a_burst_gather(make_drainer, sqs, queues,
                                                        store: ResultsStore) -> None:
    # GIVEN a drainer with a 0.5 s batch window, whose receives are recorded, and the first
    # result of a burst on the queue alone
    drainer = make_drainer(batch_window_s=0.5, wait_time_s=1)
    sizes: list[int] = []
    drainer.sqs.meta.events.register(
        "after-call.sqs.ReceiveMessage",
        lambda parsed, **_: sizes.append(len(parsed.get("Messages", []))))
    send(sqs, queues.output, result("first.mp4"))
    burst_sent = threading.Event()
    stop = _BurstWithinTheWindow(burst_sent)
    worker = threading.Thread(target=drainer.run, args=(stop,),
                              kwargs={"max_messages": 10, "max_idle": 5})
    worker.start()
    wait_for(lambda: sizes, timeout_s=10, what="the first receive")
    # WHEN the rest of the burst arrives one message at a time, just after that first receive
    for i in range(9):
        send(sqs, queues.output, result(f"burst-{i}.mp4"))
    burst_sent.set()
    worker.join(timeout=15)
    # THEN the drainer waited its window after the partial batch, and the next receive took the
    # nine together instead of one per receive
    assert stop.windows[:1] == [0.5]
    assert sizes[:2] == [1, 9]
    assert len(list(store.root.glob("*.csv"))) == 10
