"""Synthetic recognition functions for the orchestration benchmark (`module:function` handlers).

They do what the real function does on the wire and nothing else: wait a fixed latency (like a warm
Lambda in the course, ~2 s), then put one correct-shaped result message per record on the output
queue (docs/contracts.md, "Result") and return ``{"results": [...]}``. So the daemon's whole path
runs — receive, invoke, delete, drain, write ``results/<key>.csv`` — with a function whose cost is
known exactly.

The message is sent with one plain HTTP request (SQS JSON protocol, over a connection each worker
keeps) to the SQS named by ``AWS_ENDPOINT_URL_SQS`` or ``AWS_ENDPOINT_URL``: no boto3 import, so 64
warm workers start in seconds and stay small. Neither moto nor the lean SQS checks signatures; the
Authorization header only names the service so moto can route the call.
"""

from __future__ import annotations

import http.client
import json
import os
import time
from typing import Any
from urllib.parse import unquote_plus, urlsplit

SYNTHETIC_CSV = "synthetic_person,benchmarking,senior\n"


class _Sender:
    """One kept-alive connection per worker process, as boto3's pool would keep (urllib opens a
    new one per request, which would charge connection setup to every message)."""

    def __init__(self) -> None:
        self._conn: http.client.HTTPConnection | None = None

    def send(self, queue_url: str, body: str) -> None:
        endpoint = urlsplit(os.environ.get("AWS_ENDPOINT_URL_SQS")
                            or os.environ["AWS_ENDPOINT_URL"])
        region = os.environ.get("AWS_REGION", os.environ.get("AWS_DEFAULT_REGION", "us-east-1"))
        data = json.dumps({"QueueUrl": queue_url, "MessageBody": body}).encode()
        headers = {"Content-Type": "application/x-amz-json-1.0",
                   "X-Amz-Target": "AmazonSQS.SendMessage",
                   "Authorization": f"AWS4-HMAC-SHA256 Credential=bench/20250101/{region}/sqs/"
                                    "aws4_request, SignedHeaders=host, Signature=0"}
        for attempt in (1, 2):  # a kept-alive connection the server closed: reconnect once
            if self._conn is None:
                self._conn = http.client.HTTPConnection(endpoint.hostname, endpoint.port,
                                                        timeout=30)
            try:
                self._conn.request("POST", "/", body=data, headers=headers)
                response = self._conn.getresponse()
                payload = response.read()
            except (http.client.HTTPException, OSError):
                self._conn.close()
                self._conn = None
                if attempt == 2:
                    raise
                continue
            if response.will_close:
                self._conn.close()
                self._conn = None
            if response.status != 200:
                raise RuntimeError(f"SendMessage failed: {response.status} {payload[:300]!r}")
            return


_sender = _Sender()


def _result(record: dict[str, Any], request_id: str, latency_s: float) -> dict[str, Any]:
    obj = record["s3"]["object"]
    key = unquote_plus(obj["key"])
    return {"schema": 1, "status": "ok", "request_id": request_id,
            "bucket": record["s3"]["bucket"]["name"], "key": key, "etag": obj.get("eTag"),
            "version_id": obj.get("versionId"),
            "output": {"bucket": os.environ.get("OUTPUT_BUCKET", ""),
                       "key": key.rsplit(".", 1)[0] + ".csv"},
            "csv": SYNTHETIC_CSV,
            "people": [{"name": "synthetic_person", "major": "benchmarking", "year": "senior"}],
            "faces": [], "embedder": "synthetic", "frames_sampled": 0,
            "timings_ms": {"total": latency_s * 1000}}


def _emit(event: dict[str, Any], context: Any, latency_s: float) -> dict[str, Any]:
    if latency_s > 0:
        time.sleep(latency_s)
    queue_url = event.get("reply_to") or os.environ["OUTPUT_QUEUE_URL"]
    results = []
    for record in event.get("Records", []):
        result = _result(record, context.aws_request_id, latency_s)
        _sender.send(queue_url, json.dumps(result))
        results.append(result)
    return {"results": results}


def fixed_latency(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Sleep ``SYNTHETIC_LATENCY_S`` (default 2 s), then emit one result per record."""
    return _emit(event, context, float(os.environ.get("SYNTHETIC_LATENCY_S", "2.0")))


def sleep_2s(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """A warm course Lambda: 2 s, then the result message."""
    return _emit(event, context, 2.0)


def noop(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """No work at all: the result message at once (measures the daemon's per-message cost)."""
    return _emit(event, context, 0.0)
