"""HTTP to a Function URL: keep-alive connections, SigV4 when the URL is AWS_IAM, and a retry of
throttled calls only (a 429 means the function did not run; anything else might have), for as
long as the client waits for an answer (`timeout_s`): more clients than the function has
concurrency is the normal case for a camera fleet, not a failure.

Signing uses botocore's SigV4 signer with credentials from boto3's normal chain (environment,
profile, instance role), for service `lambda` in the URL's region.
"""

from __future__ import annotations

import json
import re
import threading
import time
import urllib.parse
from dataclasses import dataclass
from typing import Any

import structlog
import urllib3
from tenacity import (
    RetryError,
    Retrying,
    retry_if_result,
    stop_after_delay,
    wait_random_exponential,
)

log = structlog.get_logger()

AUTH_CHOICES = ("auto", "AWS_IAM", "NONE")
_URL_REGION = re.compile(r"\.lambda-url\.([a-z0-9-]+)\.on\.aws$")
#: the longest pause between tries of a throttled (429) request (full jitter, growing to it)
THROTTLE_BACKOFF_MAX_S = 1.0


class NoCredentials(RuntimeError):
    """AWS_IAM was asked for, and boto3 finds no credentials to sign with."""


@dataclass(frozen=True)
class HttpAnswer:
    status: int
    body: bytes
    headers: dict[str, str]
    elapsed_ms: float
    retries: int = 0

    def json(self) -> Any:
        try:
            return json.loads(self.body)
        except (UnicodeDecodeError, ValueError):
            return None

    @property
    def forbidden(self) -> bool:
        """Lambda's own 403 (the function did not run)."""
        return self.status == 403 and self.headers.get("x-amzn-errortype") == \
            "AccessDeniedException"


def url_region(url: str, default: str) -> str:
    """`<id>.lambda-url.<region>.on.aws` names its region; other hosts (the local cloud) use
    boto3's configured one."""
    host = urllib.parse.urlsplit(url).hostname or ""
    match = _URL_REGION.search(host)
    return match.group(1) if match else default


class UrlClient:
    """Calls one Function URL; thread-safe (one connection pool shared by the senders)."""

    def __init__(self, url: str, *, auth: str = "auto", concurrency: int = 1,
                 timeout_s: float = 30.0, region: str | None = None) -> None:
        if auth not in AUTH_CHOICES:
            raise ValueError(f"auth must be one of {AUTH_CHOICES}")
        self.url = url if url.endswith("/") or "?" in url else url + "/"
        self._pool = urllib3.PoolManager(maxsize=max(1, concurrency), block=False,
                                         retries=False,
                                         timeout=urllib3.Timeout(connect=5.0, read=timeout_s))
        self._throttle_budget_s = timeout_s
        self._lock = threading.Lock()
        self._sign = auth == "AWS_IAM"
        self._auto = auth == "auto"
        self._credentials: Any = None
        self._region = region
        if self._sign:
            self._load_credentials()

    @property
    def signing(self) -> bool:
        return self._sign

    def _load_credentials(self) -> None:
        import boto3

        session = boto3.session.Session()
        credentials = session.get_credentials()
        if credentials is None:
            raise NoCredentials("the URL needs SigV4 (AWS_IAM) and boto3 found no credentials")
        self._credentials = credentials
        self._region = url_region(self.url, self._region or session.region_name or "us-east-1")

    def _headers(self, method: str, url: str, body: bytes | None) -> dict[str, str]:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        if not self._sign:
            return headers
        from botocore.auth import SigV4Auth
        from botocore.awsrequest import AWSRequest

        request = AWSRequest(method=method, url=url, data=body or b"", headers=headers)
        SigV4Auth(self._credentials.get_frozen_credentials(), "lambda",
                  self._region).add_auth(request)
        return dict(request.headers.items())

    def request(self, method: str = "POST", *, body: bytes | None = None,
                query: dict[str, str] | None = None) -> HttpAnswer:
        """One call, retried while throttled; with auth `auto`, a 403 from Lambda switches to
        signing once (nothing ran, so resending is safe) when credentials are available."""
        url = self.url + ("?" + urllib.parse.urlencode(query) if query else "")
        answer = self._with_throttle_retries(method, url, body)
        if answer.forbidden and self._auto:
            with self._lock:
                if self._auto and not self._sign:
                    try:
                        self._load_credentials()
                    except NoCredentials:
                        self._auto = False
                        return answer
                    self._sign = True
                    log.info("camera.signing", reason="the URL answered 403: AWS_IAM",
                             region=self._region)
                self._auto = False
            answer = self._with_throttle_retries(method, url, body)
        return answer

    def _with_throttle_retries(self, method: str, url: str, body: bytes | None) -> HttpAnswer:
        tries = 0

        def once() -> HttpAnswer:
            nonlocal tries
            tries += 1
            started = time.perf_counter()
            response = self._pool.request(method, url, body=body,
                                          headers=self._headers(method, url, body),
                                          preload_content=True)
            return HttpAnswer(status=response.status, body=response.data,
                              headers={k.lower(): v for k, v in response.headers.items()},
                              elapsed_ms=(time.perf_counter() - started) * 1000.0,
                              retries=tries - 1)

        try:
            for attempt in Retrying(retry=retry_if_result(lambda a: a.status == 429),
                                    wait=wait_random_exponential(
                                        multiplier=0.05, max=THROTTLE_BACKOFF_MAX_S),
                                    stop=stop_after_delay(self._throttle_budget_s)):
                with attempt:
                    answer = once()
                if not attempt.retry_state.outcome.failed:
                    attempt.retry_state.set_result(answer)
        except RetryError as exc:
            return exc.last_attempt.result()
        return answer

    def close(self) -> None:
        self._pool.clear()
