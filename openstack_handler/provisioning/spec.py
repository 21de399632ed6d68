"""The one declarative definition of the AWS resources: `ResourceSpec` names every bucket,
queue, table and function with its knobs, and the result types of applying it.

Applied by :mod:`openstack_handler.provisioning.aws` (the buckets, queues, notification and
tables), :mod:`~openstack_handler.provisioning.camera` (the camera path's Lambda side) and
:mod:`~openstack_handler.provisioning.serverless` (the input bucket's trigger), from the local
cloud (against moto), `openstack-handler aws provision` and the `aws_resources` role (against AWS).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Protocol

NOTIFICATION_ID = "input-objects-to-queue"
#: serverless mode's entry: the input bucket invokes the function itself
FUNCTION_NOTIFICATION_ID = "input-objects-to-function"
#: daemon mode: S3 → input queue → the daemon invokes the function; serverless: S3 → the function
MODES = ("daemon", "serverless")
OBJECT_CREATED = "s3:ObjectCreated:*"
CROPS_LIFECYCLE_ID = "expire-face-crops"
URL_AUTH_TYPES = ("AWS_IAM", "NONE")
ROLE_POLICY_NAME = "least-privilege"
DEFAULT_COMMAND = "lambda_image.handlers.s3_handler"
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_QUEUE = re.compile(r"^[A-Za-z0-9_-]{1,80}$")
_TABLE = re.compile(r"^[A-Za-z0-9_.-]{3,255}$")

class ProvisioningError(Exception):
    """A resource exists in a shape the definition cannot converge to (or is not ours)."""


class SessionLike(Protocol):
    """What provisioning needs from a boto3 Session (tests and the local cloud pass adapters)."""

    def client(self, service_name: str, **kwargs: Any) -> Any: ...

    def resource(self, service_name: str, **kwargs: Any) -> Any: ...


@dataclass(frozen=True, kw_only=True)
class ResourceSpec:
    """Names and knobs of every resource; empty names are derived from *prefix*.

    The input queue's visibility timeout must cover a whole invocation plus retries: AWS advises
    at least six times the function timeout, and the default is exactly that.
    """

    prefix: str = "openstack-handler"
    input_bucket: str = ""
    output_bucket: str = ""
    input_queue: str = ""
    input_dlq: str = ""
    output_queue: str = ""
    output_dlq: str = ""
    response_queue: str = ""
    students_table: str = ""
    #: the camera path's recent frames per camera (lambda_image.camera_tracks: the function
    #: stamps each with `expires_at`, an hour on, and DynamoDB's TTL removes them later)
    camera_tracks_table: str = ""
    function_name: str = "face-recognition"
    function_timeout_s: int = 60
    function_memory_mb: int = 2048
    max_receive_count: int = 5
    visibility_timeout_s: int = 0  # 0: six times the function timeout
    receive_wait_s: int = 20  # long polling by default
    message_retention_s: int = 4 * 24 * 3600
    dlq_retention_s: int = 14 * 24 * 3600  # the maximum: time to look at what failed
    # -- the camera path: frames through Function URLs, faces through the request queue -------
    frames_bucket: str = ""  # frames a GET request names, and crops too large for a message
    request_queue: str = ""
    request_dlq: str = ""
    response_dlq: str = ""
    frame_function_name: str = "camera-frame"  # one stage: frame_handler behind a URL
    detect_function_name: str = "camera-detect"  # two stages: detect_handler behind a URL ...
    recognize_function_name: str = "camera-recognize"  # ... and recognize_handler on the queue
    camera_function_timeout_s: int = 30
    camera_function_memory_mb: int = 2048
    #: AWS_IAM: callers sign with SigV4. NONE: anyone with the URL may call it (public).
    url_auth_type: str = "AWS_IAM"
    #: The request queue's trigger: records per batch, the window that fills a batch, and the
    #: most batches at once (0: as many as the function's concurrency allows).
    request_batch_size: int = 10
    request_batching_window_s: int = 0
    request_max_concurrency: int = 0
    #: An answer is received by every camera client polling the response queue until its own
    #: takes it (with N clients, about N times: with 20 clients a limit of 10 receives would send
    #: 60% of the answers to the DLQ, 1000 practically none, (19/20)^1000 ~ 5e-23): after this
    #: many receives nobody is waiting for it and it moves to the DLQ. Clients release an answer older than their patience with growing delays, so one
    #: nobody takes expires within the retention period if it does not reach the DLQ first.
    response_max_receive_count: int = 1000
    #: Answers are useful for seconds: the response queue keeps them an hour (the DLQ 14 days).
    response_retention_s: int = 3600
    #: Crops spilled to the frames bucket expire after this many days.
    crops_expire_days: int = 1
    # -- what the input bucket notifies: the input queue (daemon) or the function (serverless) --
    mode: str = "daemon"
    #: serverless mode: only keys with this prefix / suffix invoke the function ("": any)
    trigger_prefix: str = ""
    trigger_suffix: str = ""
    #: serverless mode: the function's asynchronous settings (Lambda's defaults: 2 and 6 h) and
    #: the queue that receives an event with its error once they are used up (14 days' retention)
    async_max_retry_attempts: int = 2
    async_max_event_age_s: int = 21600
    failure_queue: str = ""

    def __post_init__(self) -> None:
        derived = {"input_bucket": "input", "output_bucket": "output", "input_queue": "input",
                   "input_dlq": "input-dlq", "output_queue": "output", "output_dlq": "output-dlq",
                   "response_queue": "response", "students_table": "students",
                   "camera_tracks_table": "camera-tracks",
                   "frames_bucket": "frames", "request_queue": "request",
                   "request_dlq": "request-dlq", "response_dlq": "response-dlq",
                   "failure_queue": "failed"}
        for name, suffix in derived.items():
            if not getattr(self, name):
                object.__setattr__(self, name, f"{self.prefix}-{suffix}")
        if not self.visibility_timeout_s:
            object.__setattr__(self, "visibility_timeout_s", 6 * self.function_timeout_s)
        self._validate()

    def _validate(self) -> None:
        problems = [f"bucket name {b!r}" for b in (self.input_bucket, self.output_bucket,
                                                   self.frames_bucket) if not _BUCKET.match(b)]
        problems += [f"queue name {q!r}" for q in self.queue_names() if not _QUEUE.match(q)]
        problems += [f"table name {t!r}" for t in (self.students_table, self.camera_tracks_table)
                     if not _TABLE.match(t)]
        if not 1 <= self.function_timeout_s <= 900:
            problems.append("function_timeout_s must be 1..900")
        if not 6 * self.function_timeout_s <= self.visibility_timeout_s <= 43200:
            problems.append(f"visibility_timeout_s must be 6 x function_timeout_s "
                            f"({6 * self.function_timeout_s}) .. 43200")
        if not 1 <= self.max_receive_count <= 1000:
            problems.append("max_receive_count must be 1..1000")
        if not 1 <= self.response_max_receive_count <= 1000:
            problems.append("response_max_receive_count must be 1..1000")
        if not 1 <= self.camera_function_timeout_s <= 150:
            problems.append("camera_function_timeout_s must be 1..150 (6 x it is the request "
                            "queue's visibility, at most 900 s for a Lambda trigger)")
        if self.url_auth_type not in URL_AUTH_TYPES:
            problems.append(f"url_auth_type must be one of {', '.join(URL_AUTH_TYPES)}")
        if not 1 <= self.request_batch_size <= 10000:
            problems.append("request_batch_size must be 1..10000")
        if not 0 <= self.request_batching_window_s <= 300:
            problems.append("request_batching_window_s must be 0..300")
        if self.request_batch_size > 10 and self.request_batching_window_s < 1:
            problems.append("request_batch_size over 10 needs request_batching_window_s >= 1")
        if self.request_max_concurrency and not 2 <= self.request_max_concurrency <= 1000:
            problems.append("request_max_concurrency must be 0 (unset) or 2..1000")
        if not 60 <= self.response_retention_s <= 1209600:
            problems.append("response_retention_s must be 60..1209600")
        if self.mode not in MODES:
            problems.append(f"mode must be one of {', '.join(MODES)}, not {self.mode!r}")
        if not _QUEUE.match(self.failure_queue):
            problems.append(f"queue name {self.failure_queue!r}")
        if not 0 <= self.async_max_retry_attempts <= 2:
            problems.append("async_max_retry_attempts must be 0..2 (Lambda's range)")
        if not 60 <= self.async_max_event_age_s <= 21600:
            problems.append("async_max_event_age_s must be 60..21600 (Lambda's range)")
        for name in ("trigger_prefix", "trigger_suffix"):
            if len(getattr(self, name).encode()) > 1024:
                problems.append(f"{name} must be at most 1024 bytes (an S3 key's length)")
        if problems:
            raise ValueError("invalid resource spec: " + "; ".join(problems))

    def queue_names(self) -> tuple[str, ...]:
        return (self.input_queue, self.input_dlq, self.output_queue, self.output_dlq,
                self.response_queue, self.response_dlq, self.request_queue, self.request_dlq)

    @property
    def request_visibility_timeout_s(self) -> int:
        """Six times the camera functions' timeout, as AWS advises for a Lambda trigger."""
        return 6 * self.camera_function_timeout_s

    def camera_functions(self) -> dict[str, str]:
        """Camera function name → its entry point (one image, CMD picks)."""
        return {self.frame_function_name: "lambda_image.handlers.frame_handler",
                self.detect_function_name: "lambda_image.handlers.detect_handler",
                self.recognize_function_name: "lambda_image.handlers.recognize_handler"}


@dataclass(frozen=True)
class Change:
    """One write made to converge a resource (`action` is "created" or "updated")."""

    kind: str
    name: str
    action: str
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.action} {self.kind} {self.name}" + (f" ({self.detail})" if self.detail else "")


@dataclass(frozen=True, kw_only=True)
class Provisioned:
    """Where everything is, plus what this run changed (empty: everything was already there)."""

    input_bucket: str
    output_bucket: str
    input_queue_url: str
    input_queue_arn: str
    input_dlq_url: str
    input_dlq_arn: str
    output_queue_url: str
    output_queue_arn: str
    output_dlq_url: str
    output_dlq_arn: str
    response_queue_url: str
    response_queue_arn: str
    students_table: str
    camera_tracks_table: str = ""
    camera_tracks_table_arn: str = ""
    frames_bucket: str = ""
    request_queue_url: str = ""
    request_queue_arn: str = ""
    request_dlq_url: str = ""
    request_dlq_arn: str = ""
    response_dlq_url: str = ""
    response_dlq_arn: str = ""
    failure_queue_url: str = ""  # serverless mode only
    failure_queue_arn: str = ""
    students_table_arn: str
    account_id: str
    region: str
    partition: str = "aws"
    changes: tuple[Change, ...] = field(default=(), compare=False)

    @property
    def changed(self) -> bool:
        return bool(self.changes)


@dataclass(frozen=True, kw_only=True)
class ProvisionedFunction:
    """The function and its role, plus what this run changed."""

    function_arn: str
    role_arn: str
    changes: tuple[Change, ...] = field(default=(), compare=False)

    @property
    def changed(self) -> bool:
        return bool(self.changes)

