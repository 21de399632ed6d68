"""Helpers for the camera path's integration tests: HTTP to a URL, queues drained and counted,
request messages queued by the real detect stage while the trigger is off."""

from __future__ import annotations

import base64
import json
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from typing import Any

from camera.frames import Frame
from localcloud.cloud import LocalCloud


def http(url: str, body: bytes | None = None, *, method: str = "POST",
         headers: dict[str, str] | None = None, timeout_s: float = 60.0,
         ) -> tuple[int, dict[str, str], Any]:
    """(status, lower-cased headers, JSON body or the raw bytes)."""
    request = urllib.request.Request(url, data=body, method=method,
                                     headers=headers or {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            status, raw, got = response.status, response.read(), response.headers
    except urllib.error.HTTPError as exc:
        status, raw, got = exc.code, exc.read(), exc.headers
    try:
        parsed: Any = json.loads(raw)
    except ValueError:
        parsed = raw
    return status, {k.lower(): v for k, v in got.items()}, parsed


def frame_body(frame: Frame, request_id: str | None = None) -> bytes:
    return json.dumps({"content": base64.b64encode(frame.data).decode(),
                       "request_id": request_id or str(uuid.uuid4()),
                       "filename": frame.filename}).encode()


def drain(sqs: Any, url: str, wait_s: int = 0) -> list[dict[str, Any]]:
    """Every message now on *url*, received and deleted (bodies parsed)."""
    bodies = []
    while messages := sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10,
                                          WaitTimeSeconds=wait_s).get("Messages"):
        for m in messages:
            bodies.append(json.loads(m["Body"]))
            sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
        wait_s = 0
    return bodies


def depth(sqs: Any, url: str) -> int:
    """Messages on *url*, visible and in flight."""
    attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=[
        "ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"])["Attributes"]
    return sum(int(v) for v in attributes.values())


def wait_for(predicate: Callable[[], Any], timeout_s: float, what: str,
             interval_s: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")


def set_trigger(cloud: LocalCloud, enabled: bool) -> None:
    """Enable or disable the request queue's trigger, and wait until it says so."""
    lam = cloud.session().client("lambda")
    uuid_ = cloud.camera.mapping_uuid
    lam.update_event_source_mapping(UUID=uuid_, Enabled=enabled)
    wanted = "Enabled" if enabled else "Disabled"
    wait_for(lambda: lam.get_event_source_mapping(UUID=uuid_)["State"] == wanted, 30,
             f"the mapping to be {wanted}")


def queued_requests(cloud: LocalCloud, frames: list[Frame]) -> list[dict[str, Any]]:
    """The real detect stage's request messages for *frames*, taken off the request queue while
    the trigger is disabled (it stays disabled: the caller enables it)."""
    set_trigger(cloud, False)
    sqs = cloud.session().client("sqs")
    for frame in frames:
        status, _, answer = http(cloud.camera.detect_url, frame_body(frame))
        assert status == 200, answer
    bodies = drain(sqs, cloud.camera.request_queue_url)
    assert len(bodies) == len(frames), bodies
    return bodies
