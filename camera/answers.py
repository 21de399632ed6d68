"""Answers on the response queue: one poller per client process, shared by its senders.

Every camera client polls the same queue, so a receive may return another client's answer. An
answer awaited here is taken (its first copy completes the request, later copies are counted as
duplicates) and deleted; any other message is released for its owner at once while it is young
enough that somebody may still wait for it (younger than this client's own patience), and after
a growing delay once it is older, so that an answer nobody waits for any more does not keep the
clients busy: it ends in the DLQ after the queue's maxReceiveCount, or expires. A receive that
brought only other clients' answers is followed by a short random pause, so that many clients
pass answers round without spinning.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections import OrderedDict
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import structlog
from botocore.exceptions import BotoCoreError, ClientError

log = structlog.get_logger()

_REMEMBERED = 10_000  # foreign message ids whose sightings are counted
_RELEASE_CAP_S = 10
_FOREIGN_PAUSE_S = 0.05  # at most, after a receive of other clients' answers only


@dataclass(frozen=True)
class QueuedAnswer:
    """An answer as it came off the queue, and when."""

    body: dict[str, Any]
    received_at_ms: float


def release_delay_s(sightings: int, age_s: float = 0.0, patience_s: float = 30.0) -> int:
    """How long a foreign message is hidden again after this client saw it *sightings* times:
    0 while it is younger than *patience_s* (its owner may be waiting); then 0, 1, 3, 7, ...
    seconds, at most 10."""
    if age_s < patience_s:
        return 0
    return min(_RELEASE_CAP_S, 2 ** (sightings - 1) - 1)


class ResponseWaiter:
    """Receives from the response queue in a thread of its own until closed."""

    def __init__(self, sqs: Any, queue_url: str, *, wait_s: int = 1,
                 patience_s: float = 30.0) -> None:
        self.sqs = sqs
        self.queue_url = queue_url
        self.wait_s = wait_s
        self.patience_s = patience_s
        self._lock = threading.Lock()
        self._pending: dict[str, Future[QueuedAnswer]] = {}
        self._answered: set[str] = set()
        self._foreign: OrderedDict[str, int] = OrderedDict()
        self.duplicates = 0
        self.released = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="response-poller", daemon=True)
        self._thread.start()

    def expect(self, request_id: str) -> Future[QueuedAnswer]:
        """Register before sending: the answer may be on the queue before the HTTP reply."""
        future: Future[QueuedAnswer] = Future()
        with self._lock:
            self._pending[request_id] = future
        return future

    def forget(self, request_id: str) -> None:
        """Stop waiting for *request_id* (its request failed or timed out)."""
        with self._lock:
            self._pending.pop(request_id, None)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(self.wait_s + 10)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                messages = self.sqs.receive_message(
                    QueueUrl=self.queue_url, MaxNumberOfMessages=10,
                    WaitTimeSeconds=self.wait_s,
                    MessageSystemAttributeNames=["SentTimestamp"]).get("Messages", [])
            except (BotoCoreError, ClientError) as exc:
                log.warning("camera.response_poll_failed", error=str(exc))
                self._stop.wait(1.0)
                continue
            received_at = time.time() * 1000.0
            ours = [self._handle(message, received_at) for message in messages]
            if messages and not any(ours):  # let the other clients have a turn
                self._stop.wait(random.uniform(0, _FOREIGN_PAUSE_S))

    def _handle(self, message: dict[str, Any], received_at_ms: float) -> bool:
        """Take an awaited answer (True) or release another client's (False)."""
        try:
            body = json.loads(message["Body"])
            request_id = body.get("request_id") if isinstance(body, dict) else None
        except ValueError:
            body, request_id = None, None
        with self._lock:
            future = self._pending.pop(request_id, None) if isinstance(request_id, str) else None
            ours = future is not None or request_id in self._answered
            if future is not None:
                self._answered.add(request_id)
            elif ours:
                self.duplicates += 1
        if ours:
            if future is not None:
                future.set_result(QueuedAnswer(body, received_at_ms))
            self._delete(message)
            return True
        self._release(message, received_at_ms)
        return False

    def _delete(self, message: dict[str, Any]) -> None:
        try:
            self.sqs.delete_message(QueueUrl=self.queue_url,
                                    ReceiptHandle=message["ReceiptHandle"])
        except (BotoCoreError, ClientError) as exc:  # it comes back: counted as a duplicate
            log.warning("camera.answer_delete_failed", error=str(exc))

    def _release(self, message: dict[str, Any], received_at_ms: float) -> None:
        with self._lock:
            seen = self._foreign.pop(message["MessageId"], 0) + 1
            self._foreign[message["MessageId"]] = seen
            while len(self._foreign) > _REMEMBERED:
                self._foreign.popitem(last=False)
            self.released += 1
        sent_ms = float(message.get("Attributes", {}).get("SentTimestamp") or received_at_ms)
        age_s = max(0.0, (received_at_ms - sent_ms) / 1000.0)
        try:
            self.sqs.change_message_visibility(QueueUrl=self.queue_url,
                                               ReceiptHandle=message["ReceiptHandle"],
                                               VisibilityTimeout=release_delay_s(
                                                   seen, age_s, self.patience_s))
        except (BotoCoreError, ClientError) as exc:  # it comes back after the queue's timeout
            log.warning("camera.answer_release_failed", error=str(exc))
