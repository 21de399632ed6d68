"""``python -m localcloud.moto_main``: moto server, with its hot SQS paths made cheap.

Profiling the no-op benchmark showed moto's SQS doing avoidable work per request, so the local
SQS cost more CPU than the daemon it serves (16–22 ms per message against the daemon's 6–10) and
slowed down as queues filled. Real SQS has no such costs, and a local cloud that does would hide
the daemon's own behaviour. Each patch keeps the semantics (tests/localcloud check them on the
patched server) and is applied only where moto still has the shape it replaces:

- the retention check computed *all* queue attributes, several of which count the queue's
  messages, for every message a receive returned: O(depth²) per receive. It now reads the one
  attribute it needs.
- ``unix_time()`` built two datetimes and ran an import to say what ``time.time()`` says, and
  SQS asks it twice per queued message on every send (through ``Queue.attributes``) and receive.
- the queue scans (visible messages and the three approximate counts) take the time once per
  scan instead of twice per message.
- the request router listed moto's package directory on disk for every request, and matched
  the request's host against every service's URL patterns: both are now looked up once per host.
- each request asked ``inspect`` for the response class's methods and re-spelled the action name
  in snake case: both are now cached (a class's methods and a name's spelling do not change).
- werkzeug formatted and wrote an access-log line for every request, 14 % of the server's CPU
  under load; ``LOCALCLOUD_MOTO_ACCESS_LOG=1`` turns it back on. Errors are logged either way.
- moto runs its Flask apps in debug mode, in which Flask builds a new class for every request
  without a file upload, only to word a KeyError about HTML forms better. It no longer does.

One patch is not about speed: S3's ``LambdaFunctionConfigurations`` notifications. moto's S3 calls
its own Lambda backend with them, synchronously and through Docker (absent here), and drops any
error. Here each event is handed to :mod:`localcloud.s3_lambda_delivery`, which invokes the local
cloud's Lambda service (``LOCALCLOUD_S3_LAMBDA_ENDPOINT``) asynchronously, an ``Event``
invocation, as S3 does on AWS, and writing such a notification is refused unless the function's
policy lets S3 invoke it, as AWS refuses it. Without that variable the event is logged as
dropped (and nothing is checked). And moto's own PutFunctionEventInvokeConfig replaces the
configuration, as Lambda's does, instead of appending one that Get never shows (what `aws
provision` against moto needs to see a changed setting). And a multipart upload sends one
``ObjectCreated:CompleteMultipartUpload`` event, as S3 does, where moto sent a Put event too.
"""

from __future__ import annotations

import functools
import inspect
import os
import sys
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

#: bound on the router's per-host cache (hosts are few: one per service, plus S3 bucket hosts).
_MAX_CACHED_HOSTS = 1024


def _valid_by_retention(self: Any, queue_name: str, message: Any) -> bool:
    from moto.core.utils import unix_time

    retention_s = int(self.get_queue(queue_name).message_retention_period)
    return retention_s + message.sent_timestamp / 1000 > unix_time()


def _fast_unix_time(original: Callable[..., float], scale: float) -> Callable[..., float]:
    """moto's ``unix_time(dt=None)`` builds two datetimes (and runs an import) to say what
    ``time.time()`` says; SQS calls it twice per queued message on every send and receive."""

    def unix_time(dt: Any = None) -> float:
        return time.time() * scale if dt is None else original(dt)

    return unix_time


def _visible_messages(self: Any) -> list[Any]:
    now = time.time() * 1000.0
    return [m for m in self._messages if m.visible_at < now and not m.delayed_until > now]


def _count_visible(self: Any) -> int:
    return len(_visible_messages(self))


def _count_delayed(self: Any) -> int:
    now = time.time() * 1000.0
    return sum(1 for m in self._messages if m.delayed_until > now)


def _count_not_visible(self: Any) -> int:
    now = time.time() * 1000.0
    return sum(1 for m in self._messages if not m.visible_at < now)


#: moto's Queue properties that walk every queued message (on each send, through
#: ``Queue.attributes``, and on each receive), asking each message for the time twice.
_QUEUE_SCANS = {"messages": _visible_messages, "approximate_number_of_messages": _count_visible,
                "approximate_number_of_messages_delayed": _count_delayed,
                "approximate_number_of_messages_not_visible": _count_not_visible}


def _backend_by_host(original: Callable[[Any, str | None], Any]) -> Callable[..., Any]:
    """The router's answer for a host never changes: its URL patterns are fixed at start."""

    def get_backend_for_host(self: Any, host: str | None) -> Any:
        cache: dict[str | None, Any] = self.__dict__.setdefault("_backend_by_host", {})
        try:
            return cache[host]
        except KeyError:
            if len(cache) >= _MAX_CACHED_HOSTS:
                cache.clear()
            backend = cache[host] = original(self, host)
            return backend

    return get_backend_for_host


def _no_access_log(self: Any, *args: Any, **kwargs: Any) -> None:
    """werkzeug's per-request access-log line, off (see the module docstring)."""


def _no_form_hint(request: Any) -> None:
    """Flask's debug-mode hint for ``request.files`` (a new class per request), off."""


def _lambda_notifications(env: Mapping[str, str]) -> Callable[..., None]:
    """moto's ``_invoke_awslambda(account_id, event_body, fn_arn, region_name)``, to our service."""
    import logging

    from localcloud import s3_lambda_delivery

    def invoke_awslambda(account_id: str, event_body: Any, fn_arn: str,
                         region_name: str) -> None:
        delivery = s3_lambda_delivery.delivery(env)
        if delivery is None:
            logging.getLogger("localcloud.s3_lambda").error(
                "s3 event for %s dropped: %s is not set", fn_arn,
                s3_lambda_delivery.ENDPOINT_ENV)
            return
        delivery.submit(fn_arn, event_body)

    return invoke_awslambda


def _checked_notifications(original: Callable[..., None],
                           env: Mapping[str, str]) -> Callable[..., None]:
    """S3Backend.put_bucket_notification_configuration, refusing a Lambda destination whose
    policy does not let S3 invoke it (AWS checks at this point too)."""
    from moto.s3.exceptions import S3ClientError

    from localcloud import s3_lambda_delivery

    def put_bucket_notification_configuration(self: Any, bucket_name: str,
                                              notification_config: dict[str, Any]) -> None:
        url = env.get(s3_lambda_delivery.ENDPOINT_ENV, "").strip()
        entries = notification_config.get("CloudFunctionConfiguration") or []
        if url and entries:
            bucket = self.get_bucket(bucket_name)
            for entry in entries if isinstance(entries, list) else [entries]:
                arn = entry["CloudFunction"]
                reason = s3_lambda_delivery.refusal(url, arn, bucket.arn, self.account_id)
                if reason is not None:
                    raise S3ClientError("InvalidArgument", "Unable to validate the following "
                                        f"destination configurations: {arn}: {reason}")
        original(self, bucket_name, notification_config)

    return put_bucket_notification_configuration


def _replacing_event_invoke_config(original: Callable[..., Any]) -> Callable[..., Any]:
    """moto's PutFunctionEventInvokeConfig appends, and Get answers the first ever put: a changed
    setting never shows. Lambda's Put replaces the configuration."""

    def put_function_event_invoke_config(self: Any, function_name: str,
                                         config: dict[str, Any]) -> Any:
        self.get_function(function_name).event_invoke_config = []
        return original(self, function_name, config)

    return put_function_event_invoke_config


_completing = threading.local()


def _one_event_per_multipart_upload(backend: type) -> None:
    """moto's CompleteMultipartUpload stores the object with its own PutObject, which sends an
    ``ObjectCreated:Put`` event, then sends ``ObjectCreated:CompleteMultipartUpload``: two events
    (two invocations of the function, two daemon messages) where S3 sends the second only."""
    complete, put = backend.complete_multipart_upload, backend.put_object

    @functools.wraps(complete)
    def complete_multipart_upload(self: Any, *args: Any, **kwargs: Any) -> Any:
        _completing.active = True
        try:
            return complete(self, *args, **kwargs)
        finally:
            _completing.active = False

    @functools.wraps(put)
    def put_object(self: Any, *args: Any, **kwargs: Any) -> Any:
        if getattr(_completing, "active", False):
            kwargs["disable_notification"] = True
        return put(self, *args, **kwargs)

    backend.complete_multipart_upload = complete_multipart_upload
    backend.put_object = put_object


def apply_patches(env: Mapping[str, str] = os.environ) -> list[str]:
    """Patch what this moto has; returns the names patched (none if moto changed shape)."""
    from flask import debughelpers
    from moto import backends
    from moto.core import responses
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication
    from moto.s3 import notifications
    from moto.sqs import models
    from moto.sqs.models import Message, Queue, SQSBackend
    from werkzeug.serving import WSGIRequestHandler

    patched = []
    if callable(getattr(backends, "list_of_moto_modules", None)):
        modules = tuple(backends.list_of_moto_modules())
        backends.list_of_moto_modules = lambda: modules
        patched.append("backends.list_of_moto_modules")
    if callable(getattr(DomainDispatcherApplication, "get_backend_for_host", None)):
        DomainDispatcherApplication.get_backend_for_host = _backend_by_host(
            DomainDispatcherApplication.get_backend_for_host)
        patched.append("DomainDispatcherApplication.get_backend_for_host")
    for name in ("method_names_from_class", "camelcase_to_underscores"):
        if callable(getattr(responses, name, None)):
            setattr(responses, name, functools.lru_cache(maxsize=4096)(getattr(responses, name)))
            patched.append(f"responses.{name}")
    if not env.get("LOCALCLOUD_MOTO_ACCESS_LOG") and hasattr(WSGIRequestHandler, "log_request"):
        WSGIRequestHandler.log_request = _no_access_log
        patched.append("werkzeug.WSGIRequestHandler.log_request")
    if callable(getattr(debughelpers, "attach_enctype_error_multidict", None)):
        debughelpers.attach_enctype_error_multidict = _no_form_hint
        patched.append("flask.debughelpers.attach_enctype_error_multidict")
    for name, scale in (("unix_time", 1.0), ("unix_time_millis", 1000.0)):
        if callable(getattr(models, name, None)):
            setattr(models, name, _fast_unix_time(getattr(models, name), scale))
            patched.append(f"sqs.{name}")
    message = Message("probe", "probe")
    if all(hasattr(message, a) for a in ("visible_at", "delayed_until", "visible", "delayed")):
        for name, scan in _QUEUE_SCANS.items():
            if isinstance(getattr(Queue, name, None), property):
                setattr(Queue, name, property(scan))
                patched.append(f"sqs.Queue.{name}")
    from moto.awslambda.models import LambdaBackend
    from moto.s3.models import S3Backend

    if callable(getattr(LambdaBackend, "put_function_event_invoke_config", None)):
        LambdaBackend.put_function_event_invoke_config = _replacing_event_invoke_config(
            LambdaBackend.put_function_event_invoke_config)
        patched.append("awslambda.put_function_event_invoke_config")

    if callable(getattr(S3Backend, "put_bucket_notification_configuration", None)):
        S3Backend.put_bucket_notification_configuration = _checked_notifications(
            S3Backend.put_bucket_notification_configuration, env)
        patched.append("s3.put_bucket_notification_configuration")
    if callable(getattr(S3Backend, "complete_multipart_upload", None)) and (
            "disable_notification" in inspect.signature(S3Backend.put_object).parameters):
        _one_event_per_multipart_upload(S3Backend)
        patched.append("s3.complete_multipart_upload")
    if callable(getattr(notifications, "_invoke_awslambda", None)):
        notifications._invoke_awslambda = _lambda_notifications(env)
        patched.append("s3.notifications._invoke_awslambda")
    if hasattr(SQSBackend, "is_message_valid_based_on_retention_period"):
        SQSBackend.is_message_valid_based_on_retention_period = _valid_by_retention
        patched.append("sqs.is_message_valid_based_on_retention_period")
    return patched


def main(argv: list[str] | None = None) -> None:
    import logging

    from moto import server

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("localcloud.s3_lambda").setLevel(logging.INFO)  # each S3 → Lambda event
    apply_patches()
    server.main(argv if argv is not None else sys.argv[1:])


if __name__ == "__main__":
    main()
