"""S3 → Lambda notifications of the local cloud: moto's S3 hands each event for a
``LambdaFunctionConfigurations`` entry to this module instead of moto's own Lambda (which runs
functions in Docker, absent here), and it invokes our Lambda service with it asynchronously, as
S3 does on AWS: ``POST /2015-03-31/functions/{arn}/invocations`` with
``X-Amz-Invocation-Type: Event``. From there the function's event queue, retries, maximum event
age and destinations apply (:mod:`lambda_service.async_invoke`).

Runs inside the moto server process (``python -m localcloud.moto_main``), which learns where the
Lambda service is from ``LOCALCLOUD_S3_LAMBDA_ENDPOINT``. The upload that caused the event never
waits for the invocation: events go to a bounded queue drained by one thread, which retries a
refused or unreachable Lambda service (429, 5xx, connection errors) for up to
:data:`PATIENCE_S` (an hour: a Lambda service restarted meanwhile still gets every upload's
event, in order), then logs the event as dropped. A 4xx other than 429 (no such function, an
event over 256 KB) is logged and dropped at once: trying again would not change the answer.

As on AWS, S3 checks a ``LambdaFunctionConfigurations`` entry when the notification is written
(:func:`refusal`): the function must exist and its resource policy must let ``s3.amazonaws.com``
invoke it for this bucket (``AWS:SourceArn``) and account (``AWS:SourceAccount``) when the
statement names them; otherwise PutBucketNotificationConfiguration fails with S3's
``InvalidArgument`` "Unable to validate the following destination configurations". So a
provisioning that forgets AddPermission fails here as it would there.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import queue
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from typing import Any

from tenacity import (
    RetryError,
    Retrying,
    retry_if_exception_type,
    stop_after_delay,
    wait_exponential,
)

ENDPOINT_ENV = "LOCALCLOUD_S3_LAMBDA_ENDPOINT"
PATIENCE_S = 3600.0
QUEUE_LIMIT = 10_000
log = logging.getLogger("localcloud.s3_lambda")  # moto's process logs through the stdlib


class RetryableDelivery(Exception):
    """The Lambda service could not take the event now (throttled, failing or unreachable)."""


class LambdaDelivery:
    """Invokes functions asynchronously with S3 events, off the thread of the S3 request."""

    def __init__(self, endpoint_url: str, *, patience_s: float = PATIENCE_S,
                 timeout_s: float = 10.0) -> None:
        self.endpoint_url = endpoint_url.rstrip("/")
        self._patience_s = patience_s
        self._timeout_s = timeout_s
        self._queue: queue.Queue[tuple[str, bytes]] = queue.Queue(QUEUE_LIMIT)
        self._thread = threading.Thread(target=self._drain, daemon=True,
                                        name="s3-lambda-delivery")
        self._thread.start()

    def submit(self, function_arn: str, event: Mapping[str, Any]) -> None:
        """Queue one event for *function_arn* (never blocks the S3 request)."""
        try:
            self._queue.put_nowait((function_arn, json.dumps(event).encode()))
        except queue.Full:
            log.error("s3 event for %s dropped: %d events already wait for the Lambda service",
                      function_arn, QUEUE_LIMIT)

    def _drain(self) -> None:
        while True:
            function_arn, body = self._queue.get()
            try:
                self.deliver(function_arn, body)
            except Exception:  # the delivery thread's loop boundary: log and take the next
                log.exception("s3 event for %s dropped", function_arn)

    def deliver(self, function_arn: str, body: bytes) -> str | None:
        """One Event invocation, retried while the service cannot take it; its request id, or
        None when it was dropped (logged)."""
        try:
            for attempt in Retrying(retry=retry_if_exception_type(RetryableDelivery),
                                    stop=stop_after_delay(self._patience_s),
                                    wait=wait_exponential(multiplier=0.1, max=5)):
                with attempt:
                    return self._post(function_arn, body)
        except RetryError as exc:
            log.error("s3 event for %s dropped after %.0f s: %s", function_arn,
                      self._patience_s, exc.last_attempt.exception())
        return None

    def _post(self, function_arn: str, body: bytes) -> str | None:
        path = f"/2015-03-31/functions/{urllib.parse.quote(function_arn, safe='')}/invocations"
        request = urllib.request.Request(
            self.endpoint_url + path, data=body, method="POST",
            headers={"Content-Type": "application/json", "X-Amz-Invocation-Type": "Event"})
        try:
            with urllib.request.urlopen(request, timeout=self._timeout_s) as response:
                request_id = response.headers.get("x-amzn-RequestId")
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")[:500]
            if exc.code == 429 or exc.code >= 500:
                raise RetryableDelivery(f"HTTP {exc.code}: {detail}") from exc
            log.error("s3 event for %s refused (HTTP %d): %s", function_arn, exc.code, detail)
            return None
        except OSError as exc:  # URLError, connection refused or reset, timeout
            raise RetryableDelivery(str(exc)) from exc
        log.info("s3 event for %s queued as Event invocation %s", function_arn, request_id)
        return request_id


def _allows_s3(statement: Mapping[str, Any], bucket_arn: str, account_id: str) -> bool:
    principal = statement.get("Principal")
    service = principal.get("Service") if isinstance(principal, Mapping) else principal
    if statement.get("Effect", "Allow") != "Allow" or service not in ("s3.amazonaws.com", "*"):
        return False
    if statement.get("Action") not in ("lambda:InvokeFunction", "lambda:*"):
        return False
    condition = statement.get("Condition") or {}
    source_arn = (condition.get("ArnLike") or {}).get("AWS:SourceArn") or (
        condition.get("ArnEquals") or {}).get("AWS:SourceArn")
    source_account = (condition.get("StringEquals") or {}).get("AWS:SourceAccount")
    return ((source_arn is None or fnmatch.fnmatchcase(bucket_arn, str(source_arn)))
            and (source_account is None or str(source_account) == account_id))


def refusal(endpoint_url: str, function_arn: str, bucket_arn: str, account_id: str,
            timeout_s: float = 10.0) -> str | None:
    """Why S3 may not invoke *function_arn* for *bucket_arn* (None: it may)."""
    path = f"/2015-03-31/functions/{urllib.parse.quote(function_arn, safe='')}/policy"
    try:
        with urllib.request.urlopen(endpoint_url.rstrip("/") + path,
                                    timeout=timeout_s) as response:
            policy = json.loads(json.loads(response.read())["Policy"])
    except urllib.error.HTTPError as exc:
        if exc.code == 404:  # no such function, or a function without any policy
            return f"{function_arn} does not exist or grants S3 nothing"
        return f"the Lambda service answered HTTP {exc.code}"
    except OSError as exc:
        return f"the Lambda service is unreachable ({exc})"
    if any(_allows_s3(s, bucket_arn, account_id) for s in policy.get("Statement", [])):
        return None
    return (f"the policy of {function_arn} does not let s3.amazonaws.com invoke it for "
            f"{bucket_arn} in account {account_id}")


_delivery: LambdaDelivery | None = None
_delivery_lock = threading.Lock()


def delivery(env: Mapping[str, str]) -> LambdaDelivery | None:
    """The process's one LambdaDelivery (None when no Lambda endpoint is configured)."""
    global _delivery
    url = env.get(ENDPOINT_ENV, "").strip()
    if not url:
        return None
    with _delivery_lock:
        if _delivery is None or _delivery.endpoint_url != url.rstrip("/"):
            _delivery = LambdaDelivery(url)
        return _delivery
