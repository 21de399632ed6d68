"""Long polls that a stop does not have to wait out.

A ``ReceiveMessage`` long poll holds its thread for up to ``wait_time_s`` (20 s), so a daemon
stopped while idle used to wait for the consumer's poll and then the drainer's (33-37 s measured
on an idle daemon). :class:`Receiver` runs the calls on a thread of its own; the caller waits for
the answer or for its stop event, whichever comes first, and abandons the call on stop.

An abandoned call is still out at SQS, and SQS does not drop it when the client stops listening:
a message that arrives before its wait ends is handed to it (aws-sdk-java-v2 #1395, aws-sdk-js
#2350). So, while this process lives, such a late answer is released at once
(``ChangeMessageVisibility`` 0); and the receive asks for a short visibility
(``Settings.receive_visibility_s``, the visibility heartbeat extends what is dispatched), so that
if the process has exited by then, the message is hidden for that short claim only, not for the
whole visibility timeout. Either way nothing is lost.
"""

from __future__ import annotations

import queue
import threading
from concurrent.futures import Future
from typing import Any

import structlog
from botocore.exceptions import BotoCoreError, ClientError

from openstack_handler.daemon.deleter import change_visibility

log = structlog.get_logger(__name__)

#: how often a waiting caller looks at its stop event (the longest a stop waits for a receive).
STOP_CHECK_S = 0.25
#: a worker thread with nothing to do for this long ends (the next receive starts another).
IDLE_EXIT_S = 30.0


class Receiver:
    """``receive_message`` on a worker thread (a daemon thread: it never holds up the exit).

    The thread is started by the first receive and ends after :meth:`close` or
    :data:`IDLE_EXIT_S` without work (so that a consumer that is done does not keep it, and
    its client, alive); the next receive starts it again.
    """

    def __init__(self, sqs: Any, queue_url: str, *, name: str,
                 stop_check_s: float = STOP_CHECK_S, idle_exit_s: float = IDLE_EXIT_S) -> None:
        self.sqs = sqs
        self.queue_url = queue_url
        self.name = name
        self.stop_check_s = stop_check_s
        self.idle_exit_s = idle_exit_s
        self.abandoned = 0  #: calls given up on because of a stop
        self.released_late = 0  #: messages an abandoned call returned, released at once
        self._requests: queue.SimpleQueue[tuple[dict[str, Any], Future[dict[str, Any]]] | None] \
            = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()  # guards _thread against a request put as it exits
        self._out: Future[dict[str, Any]] | None = None

    @property
    def running(self) -> bool:
        """Whether the worker thread exists (it ends after close() or when idle)."""
        with self._lock:
            return self._thread is not None

    @property
    def busy(self) -> bool:
        """Whether a call (perhaps an abandoned one) is still out."""
        out = self._out
        return out is not None and not out.done()

    def receive(self, stop: threading.Event, **params: Any) -> dict[str, Any] | None:
        """The ``receive_message`` response, or None when *stop* was set before it came (the
        call is abandoned; see the module docstring). SQS errors are raised as the call's own."""
        if stop.is_set():
            return None
        future: Future[dict[str, Any]] = Future()
        done = threading.Event()
        future.add_done_callback(lambda _f: done.set())
        self._out = future
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._serve, name=f"receive-{self.name}",
                                                daemon=True)
                self._thread.start()
            self._requests.put((params, future))
        while not done.wait(self.stop_check_s):
            if stop.is_set():
                self.abandoned += 1
                future.add_done_callback(self._release_late)
                log.debug("receiver.abandoned", queue=self.name)
                return None
        return future.result()

    def close(self) -> None:
        """Let the worker thread end once the call it may still have out returns."""
        with self._lock:
            if self._thread is not None:
                self._requests.put(None)

    def _serve(self) -> None:
        while True:
            try:
                item = self._requests.get(timeout=self.idle_exit_s)
            except queue.Empty:
                item = None
            if item is None:  # closed, or idle: end, unless a request came in meanwhile
                with self._lock:
                    if self._requests.empty():
                        self._thread = None
                        return
                continue
            params, future = item
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(self.sqs.receive_message(**params))
            except Exception as exc:  # noqa: BLE001 -- not handled here: the caller gets it
                future.set_exception(exc)

    def _release_late(self, future: Future[dict[str, Any]]) -> None:
        """An abandoned call came back: give back whatever it received, at once."""
        if future.cancelled() or future.exception() is not None:
            return
        messages = future.result().get("Messages", [])
        if not messages:
            return
        receipts = [m["ReceiptHandle"] for m in messages]
        try:
            released = change_visibility(self.sqs, self.queue_url, receipts, 0)
        except (BotoCoreError, ClientError) as exc:
            log.warning("receiver.late_release_failed", queue=self.name, count=len(receipts),
                        error=str(exc), note="they return after the receive's short visibility")
            return
        self.released_late += released
        log.info("receiver.released_late", queue=self.name, count=released,
                 note="a receive abandoned on stop returned them; they are visible again")
