"""A lean, in-memory SQS for measuring the daemon alone: ``python -m bench.lean_sqs --port N``.

On this 2-core machine moto's SQS costs more CPU per message than the daemon it serves (Flask
dispatch, botocore-model serialization and a new TCP connection per request), so a no-op
benchmark against it measures moto as much as the daemon. This server speaks the same wire
protocol boto3 uses for SQS (JSON 1.0, ``X-Amz-Target: AmazonSQS.<Operation>``) over HTTP/1.1
keep-alive, and keeps the semantics the daemon relies on:

- receive returns at most ``MaxNumberOfMessages`` visible messages, makes them invisible for the
  visibility timeout, counts receives (``ApproximateReceiveCount``) and hands out a new receipt
  handle each time; a long poll (``WaitTimeSeconds``) returns as soon as a message is visible;
- delete and change-visibility need the newest receipt handle (an older one deletes nothing, as
  in SQS); visibility 0 makes a message receivable at once; batches are limited to 10 entries;
- an unknown queue is ``QueueDoesNotExist`` with SQS's query-compatible error code.

Not implemented (the benchmark does not use them, and calls to them fail loudly): dead-letter
redrive, FIFO, message attributes, tags, policies. The product's local cloud stays moto.
"""

from __future__ import annotations

import argparse
import hashlib
import heapq
import itertools
import json
import secrets
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Self

from lambda_service.net import free_port, wait_http_ready

REPO = Path(__file__).resolve().parents[1]

ACCOUNT_ID = "123456789012"
REGION = "us-east-1"
MAX_BATCH = 10
DEFAULT_VISIBILITY_S = 30
MAX_WAIT_S = 20


class SQSError(Exception):
    """An SQS error response: *code* as JSON protocol ``__type``, *query_code* for the header."""

    def __init__(self, code: str, message: str, *, query_code: str | None = None,
                 status: int = 400) -> None:
        super().__init__(message)
        self.code = code
        self.query_code = query_code or code
        self.status = status


@dataclass
class _Message:
    message_id: str
    body: str
    md5: str
    sent_ms: int
    visible_at: float = 0.0
    receipt: str | None = None
    receive_count: int = 0
    first_receive_ms: int | None = None


@dataclass
class _Queue:
    name: str
    url: str
    visibility_timeout_s: int = DEFAULT_VISIBILITY_S
    messages: dict[str, _Message] = field(default_factory=dict)
    ready: deque[str] = field(default_factory=deque)  # ids, oldest first (lazily pruned)
    hidden: list[tuple[float, int, str]] = field(default_factory=list)  # heap of (visible_at, …)
    by_receipt: dict[str, str] = field(default_factory=dict)

    def surface(self, now: float) -> None:
        """Move messages whose invisibility ended back to the ready line."""
        while self.hidden and self.hidden[0][0] <= now:
            visible_at, _, message_id = heapq.heappop(self.hidden)
            message = self.messages.get(message_id)
            if message is not None and message.visible_at == visible_at:
                self.ready.append(message_id)

    def hide(self, message: _Message, until: float, seq: int) -> None:
        message.visible_at = until
        heapq.heappush(self.hidden, (until, seq, message.message_id))

    def next_surfacing(self) -> float | None:
        return self.hidden[0][0] if self.hidden else None

    def counts(self, now: float) -> tuple[int, int]:
        visible = sum(1 for m in self.messages.values() if m.visible_at <= now)
        return visible, len(self.messages) - visible


class LeanSQS:
    """The queues and the operations on them; thread-safe (one lock, one condition)."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url.rstrip("/")
        self._queues: dict[str, _Queue] = {}
        self._cond = threading.Condition()
        self._seq = itertools.count()

    # -- helpers -----------------------------------------------------------------------------

    def _queue(self, params: dict[str, Any]) -> _Queue:
        url = str(params.get("QueueUrl", ""))
        queue = self._queues.get(url.rstrip("/").rsplit("/", 1)[-1])
        if queue is None:
            raise SQSError("QueueDoesNotExist", f"The specified queue does not exist: {url}",
                           query_code="AWS.SimpleQueueService.NonExistentQueue")
        return queue

    @staticmethod
    def _entries(params: dict[str, Any]) -> list[dict[str, Any]]:
        entries = params.get("Entries") or []
        if not entries:
            raise SQSError("EmptyBatchRequest", "There should be at least one entry.",
                           query_code="AWS.SimpleQueueService.EmptyBatchRequest")
        if len(entries) > MAX_BATCH:
            raise SQSError("TooManyEntriesInBatchRequest",
                           f"Maximum number of entries per request are {MAX_BATCH}.",
                           query_code="AWS.SimpleQueueService.TooManyEntriesInBatchRequest")
        return entries

    def _enqueue(self, queue: _Queue, body: str, delay_s: int) -> _Message:
        message = _Message(str(uuid.uuid4()), body, hashlib.md5(body.encode()).hexdigest(),
                           int(time.time() * 1000))
        queue.messages[message.message_id] = message
        if delay_s > 0:
            queue.hide(message, time.monotonic() + delay_s, next(self._seq))
        else:
            queue.ready.append(message.message_id)
        return message

    def _inflight(self, queue: _Queue, receipt: str) -> _Message | None:
        """The message *receipt* names if it is that message's newest receipt, else None."""
        message_id = queue.by_receipt.get(receipt)
        message = queue.messages.get(message_id) if message_id else None
        return message if message is not None and message.receipt == receipt else None

    # -- operations (AmazonSQS.<name>) -------------------------------------------------------

    def CreateQueue(self, params: dict[str, Any]) -> dict[str, Any]:  # (SQS wire names)
        name = str(params["QueueName"])
        attributes = params.get("Attributes") or {}
        with self._cond:
            queue = self._queues.get(name)
            if queue is None:
                queue = _Queue(name, f"{self.base_url}/{ACCOUNT_ID}/{name}")
                self._queues[name] = queue
            if "VisibilityTimeout" in attributes:
                queue.visibility_timeout_s = int(attributes["VisibilityTimeout"])
        return {"QueueUrl": queue.url}

    def GetQueueUrl(self, params: dict[str, Any]) -> dict[str, Any]:
        with self._cond:
            return {"QueueUrl": self._queue({"QueueUrl": params["QueueName"]}).url}

    def GetQueueAttributes(self, params: dict[str, Any]) -> dict[str, Any]:
        with self._cond:
            queue = self._queue(params)
            now = time.monotonic()
            queue.surface(now)
            visible, hidden = queue.counts(now)
            every = {"QueueArn": f"arn:aws:sqs:{REGION}:{ACCOUNT_ID}:{queue.name}",
                     "ApproximateNumberOfMessages": str(visible),
                     "ApproximateNumberOfMessagesNotVisible": str(hidden),
                     "ApproximateNumberOfMessagesDelayed": "0",
                     "VisibilityTimeout": str(queue.visibility_timeout_s)}
        wanted = params.get("AttributeNames") or []
        return {"Attributes": every if "All" in wanted
                else {k: v for k, v in every.items() if k in wanted}}

    def SendMessage(self, params: dict[str, Any]) -> dict[str, Any]:
        with self._cond:
            message = self._enqueue(self._queue(params), str(params["MessageBody"]),
                                    int(params.get("DelaySeconds") or 0))
            self._cond.notify_all()
        return {"MessageId": message.message_id, "MD5OfMessageBody": message.md5}

    def SendMessageBatch(self, params: dict[str, Any]) -> dict[str, Any]:
        entries = self._entries(params)
        successful = []
        with self._cond:
            queue = self._queue(params)
            for entry in entries:
                message = self._enqueue(queue, str(entry["MessageBody"]),
                                        int(entry.get("DelaySeconds") or 0))
                successful.append({"Id": entry["Id"], "MessageId": message.message_id,
                                   "MD5OfMessageBody": message.md5})
            self._cond.notify_all()
        return {"Successful": successful, "Failed": []}

    def ReceiveMessage(self, params: dict[str, Any]) -> dict[str, Any]:
        limit = int(params.get("MaxNumberOfMessages") or 1)
        if not 1 <= limit <= MAX_BATCH:
            raise SQSError("InvalidParameterValue",
                           f"Value {limit} for parameter MaxNumberOfMessages is invalid.")
        wait_s = min(float(params.get("WaitTimeSeconds") or 0), MAX_WAIT_S)
        wanted = set(params.get("MessageSystemAttributeNames") or [])
        wanted |= set(params.get("AttributeNames") or [])
        deadline = time.monotonic() + wait_s
        with self._cond:
            queue = self._queue(params)
            visibility_s = int(params.get("VisibilityTimeout", queue.visibility_timeout_s))
            while True:
                now = time.monotonic()
                queue.surface(now)
                taken = self._take(queue, limit, now, visibility_s)
                if taken or now >= deadline:
                    break
                surfacing = queue.next_surfacing()
                timeout = deadline - now if surfacing is None else min(deadline, surfacing) - now
                self._cond.wait(max(timeout, 0.001))
            return {"Messages": [self._render(m, wanted) for m in taken]} if taken else {}

    def _take(self, queue: _Queue, limit: int, now: float, visibility_s: int) -> list[_Message]:
        taken: list[_Message] = []
        while queue.ready and len(taken) < limit:
            message = queue.messages.get(queue.ready.popleft())
            if message is None or message.visible_at > now:
                continue  # deleted, or hidden again since it was lined up
            message.receive_count += 1
            if message.first_receive_ms is None:
                message.first_receive_ms = int(time.time() * 1000)
            if message.receipt is not None:
                queue.by_receipt.pop(message.receipt, None)
            message.receipt = f"{message.message_id}#{secrets.token_urlsafe(12)}"
            queue.by_receipt[message.receipt] = message.message_id
            queue.hide(message, now + visibility_s, next(self._seq))
            taken.append(message)
        return taken

    @staticmethod
    def _render(message: _Message, wanted: set[str]) -> dict[str, Any]:
        every = {"ApproximateReceiveCount": str(message.receive_count),
                 "SentTimestamp": str(message.sent_ms),
                 "ApproximateFirstReceiveTimestamp": str(message.first_receive_ms)}
        rendered: dict[str, Any] = {"MessageId": message.message_id,
                                    "ReceiptHandle": message.receipt, "MD5OfBody": message.md5,
                                    "Body": message.body}
        attributes = every if "All" in wanted else {k: v for k, v in every.items() if k in wanted}
        if attributes:
            rendered["Attributes"] = attributes
        return rendered

    def _delete(self, queue: _Queue, receipt: str) -> None:
        if "#" not in receipt:
            raise SQSError("ReceiptHandleIsInvalid", f"The input receipt handle {receipt!r} is "
                           "not a valid receipt handle.")
        message = self._inflight(queue, receipt)
        if message is not None:  # an older receipt deletes nothing (and is not an error)
            del queue.messages[message.message_id]
            queue.by_receipt.pop(receipt, None)

    def DeleteMessage(self, params: dict[str, Any]) -> dict[str, Any]:
        with self._cond:
            self._delete(self._queue(params), str(params["ReceiptHandle"]))
        return {}

    def DeleteMessageBatch(self, params: dict[str, Any]) -> dict[str, Any]:
        return self._batch(params, lambda queue, entry: self._delete(
            queue, str(entry["ReceiptHandle"])))

    def _change_visibility(self, queue: _Queue, receipt: str, timeout_s: int) -> None:
        message = self._inflight(queue, receipt)
        if message is None or message.visible_at <= time.monotonic():
            raise SQSError("MessageNotInflight", "The message is not in flight.",
                           query_code="AWS.SimpleQueueService.MessageNotInflight")
        if timeout_s <= 0:
            message.visible_at = 0.0
            queue.ready.append(message.message_id)
            self._cond.notify_all()
        else:
            queue.hide(message, time.monotonic() + timeout_s, next(self._seq))

    def ChangeMessageVisibility(self, params: dict[str, Any]) -> dict[str, Any]:
        with self._cond:
            self._change_visibility(self._queue(params), str(params["ReceiptHandle"]),
                                    int(params["VisibilityTimeout"]))
        return {}

    def ChangeMessageVisibilityBatch(self, params: dict[str, Any]) -> dict[str, Any]:
        return self._batch(params, lambda queue, entry: self._change_visibility(
            queue, str(entry["ReceiptHandle"]), int(entry["VisibilityTimeout"])))

    def _batch(self, params: dict[str, Any],
               apply: Callable[[_Queue, dict[str, Any]], None]) -> dict[str, Any]:
        entries = self._entries(params)
        successful, failed = [], []
        with self._cond:
            queue = self._queue(params)
            for entry in entries:
                try:
                    apply(queue, entry)
                except SQSError as exc:
                    failed.append({"Id": entry["Id"], "Code": exc.code, "Message": str(exc),
                                   "SenderFault": True})
                else:
                    successful.append({"Id": entry["Id"]})
        return {"Successful": successful, "Failed": failed}

    def PurgeQueue(self, params: dict[str, Any]) -> dict[str, Any]:
        with self._cond:
            queue = self._queue(params)
            queue.messages.clear()
            queue.ready.clear()
            queue.hidden.clear()
            queue.by_receipt.clear()
        return {}

    def handle(self, operation: str, params: dict[str, Any]) -> dict[str, Any]:
        method = getattr(self, operation, None) if operation[:1].isupper() else None
        if method is None:
            raise SQSError("UnsupportedOperation", f"{operation} is not implemented by the lean "
                           "benchmark SQS (bench/lean_sqs.py)",
                           query_code="AWS.SimpleQueueService.UnsupportedOperation")
        return method(params)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: one connection per client thread
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        target = self.headers.get("X-Amz-Target", "")
        try:
            if not target.startswith("AmazonSQS."):
                raise SQSError("InvalidAction", f"unsupported target {target!r}")
            result = self.server.sqs.handle(target.removeprefix("AmazonSQS."),
                                            json.loads(body or b"{}"))
            self._reply(200, result)
        except SQSError as exc:
            self._reply(exc.status, {"__type": f"com.amazonaws.sqs#{exc.code}",
                                     "message": str(exc)},
                        {"x-amzn-query-error": f"{exc.query_code};Sender"})
        except (KeyError, TypeError, ValueError) as exc:
            self._reply(400, {"__type": "com.amazonaws.sqs#InvalidParameterValue",
                              "message": f"malformed request: {exc!r}"},
                        {"x-amzn-query-error": "InvalidParameterValue;Sender"})

    def do_GET(self) -> None:
        self._reply(200, {"queues": len(self.server.sqs._queues)})

    def _reply(self, status: int, doc: dict[str, Any],
               headers: dict[str, str] | None = None) -> None:
        data = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/x-amz-json-1.0")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("x-amzn-RequestId", str(uuid.uuid4()))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # one line per request would cost more than the request


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int]) -> None:
        super().__init__(address, _Handler)
        host, port = self.server_address[:2]
        self.sqs = LeanSQS(f"http://{host}:{port}")


class LeanSQSProcess:
    """``python -m bench.lean_sqs`` as a subprocess (its own CPU, measurable by pid)."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = free_port(host)
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def queue_url(self, name: str) -> str:
        return f"{self.url}/{ACCOUNT_ID}/{name}"

    def __enter__(self) -> Self:
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "bench.lean_sqs", "--host", self.host, "--port", str(self.port)],
            cwd=REPO, stdout=subprocess.DEVNULL)
        wait_http_ready(self.url + "/", timeout_s=30,
                        is_alive=lambda: self._proc is not None and self._proc.poll() is None)
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._proc is not None:
            self._proc.terminate()
            self._proc.wait(timeout=10)
            self._proc = None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="bench.lean_sqs", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    server = _Server((args.host, args.port))
    print(f"lean-sqs listening on {server.sqs.base_url}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
