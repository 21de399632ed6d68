"""A function's asynchronous-invocation settings: Put/Update/Get/Delete/ListFunctionEventInvokeConfig,
as boto3's lambda client calls them (``/2019-09-25/functions/{name}/event-invoke-config``).

Lambda's rules, kept here: ``MaximumRetryAttempts`` 0..2 (default 2), ``MaximumEventAgeInSeconds``
60..21600 (default 21600, six hours); Put replaces the whole configuration (a setting left out is
back to its default), Update changes only what it names and needs a configuration to exist.
Destinations: ``OnFailure`` / ``OnSuccess`` take an SQS queue ARN here (Lambda also takes SNS,
EventBridge, S3 and Lambda ARNs; the local cloud has SQS only, and says so instead of accepting
a destination it would never deliver to).
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from lambda_service.errors import InvalidParameterValue, ResourceNotFound

DEFAULT_MAX_RETRY_ATTEMPTS = 2
DEFAULT_MAX_EVENT_AGE_S = 21600
_SQS_ARN = re.compile(r"^arn:aws[a-z-]*:sqs:[a-z0-9-]+:\d{12}:[A-Za-z0-9_-]{1,80}$")
_OTHER_DESTINATION = re.compile(r"^arn:aws[a-z-]*:(sns|events|lambda|s3):")
_FIELDS = ("MaximumRetryAttempts", "MaximumEventAgeInSeconds", "DestinationConfig")


@dataclass(frozen=True)
class EventInvokeConfig:
    """What one function's asynchronous invocations obey (None: the setting was not given)."""

    max_retry_attempts: int | None = None
    max_event_age_s: int | None = None
    on_failure: str | None = None
    on_success: str | None = None
    last_modified: float = field(default_factory=time.time)

    @property
    def retries(self) -> int:
        return (DEFAULT_MAX_RETRY_ATTEMPTS if self.max_retry_attempts is None
                else self.max_retry_attempts)

    @property
    def event_age_s(self) -> int:
        return DEFAULT_MAX_EVENT_AGE_S if self.max_event_age_s is None else self.max_event_age_s

    def to_json(self, function_arn: str) -> dict[str, Any]:
        """FunctionEventInvokeConfig as Lambda answers it (the qualified ARN, epoch seconds)."""
        body: dict[str, Any] = {"LastModified": self.last_modified,
                                "FunctionArn": f"{function_arn}:$LATEST"}
        if self.max_retry_attempts is not None:
            body["MaximumRetryAttempts"] = self.max_retry_attempts
        if self.max_event_age_s is not None:
            body["MaximumEventAgeInSeconds"] = self.max_event_age_s
        body["DestinationConfig"] = {
            "OnSuccess": {"Destination": self.on_success} if self.on_success else {},
            "OnFailure": {"Destination": self.on_failure} if self.on_failure else {}}
        return body


#: what an Event invocation of a function without a configuration gets
DEFAULT_CONFIG = EventInvokeConfig(last_modified=0.0)


def _integer(request: Mapping[str, Any], name: str, low: int, high: int) -> int | None:
    value = request.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidParameterValue(f"{name} must be an integer from {low} to {high}, "
                                    f"not {value!r}")
    return value


def _destination(config: Any, which: str) -> str | None:
    if not isinstance(config, Mapping):
        raise InvalidParameterValue("DestinationConfig must be an object")
    entry = config.get(which) or {}
    if not isinstance(entry, Mapping):
        raise InvalidParameterValue(f"DestinationConfig.{which} must be an object")
    arn = entry.get("Destination")
    if arn in (None, ""):
        return None
    if not isinstance(arn, str) or _OTHER_DESTINATION.match(arn):
        raise InvalidParameterValue(f"{which} destination {arn!r}: the local cloud delivers "
                                    "to SQS queues only (arn:aws:sqs:REGION:ACCOUNT:NAME)")
    if not _SQS_ARN.match(arn):
        raise InvalidParameterValue(f"{which} destination {arn!r} is not an SQS queue ARN")
    return arn


def parse(request: Mapping[str, Any], base: EventInvokeConfig | None = None) -> EventInvokeConfig:
    """The configuration a Put (*base* None) or an Update (onto *base*) asks for."""
    unknown = sorted(set(request) - set(_FIELDS))
    if unknown:
        raise InvalidParameterValue(f"unknown parameter(s): {', '.join(unknown)}")
    retries = _integer(request, "MaximumRetryAttempts", 0, 2)
    age = _integer(request, "MaximumEventAgeInSeconds", 60, 21600)
    config = base or EventInvokeConfig()
    changes: dict[str, Any] = {"last_modified": time.time()}
    if base is None or "MaximumRetryAttempts" in request:
        changes["max_retry_attempts"] = retries
    if base is None or "MaximumEventAgeInSeconds" in request:
        changes["max_event_age_s"] = age
    destinations = request.get("DestinationConfig")
    if destinations is not None:
        if not isinstance(destinations, Mapping):
            raise InvalidParameterValue("DestinationConfig must be an object")
        for which, name in (("OnFailure", "on_failure"), ("OnSuccess", "on_success")):
            if base is None or which in destinations:
                changes[name] = _destination(destinations, which)
    elif base is None:
        changes.update(on_failure=None, on_success=None)
    return replace(config, **changes)


class EventInvokeConfigs:
    """Each function's configuration, in memory (like the rest of the local cloud's state)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._configs: dict[str, EventInvokeConfig] = {}

    def effective(self, function: str) -> EventInvokeConfig:
        """What an Event invocation of *function* obeys now (the defaults when none is set)."""
        with self._lock:
            return self._configs.get(function, DEFAULT_CONFIG)

    def put(self, function: str, request: Mapping[str, Any]) -> EventInvokeConfig:
        config = parse(request)
        with self._lock:
            self._configs[function] = config
        return config

    def update(self, function: str, function_arn: str,
               request: Mapping[str, Any]) -> EventInvokeConfig:
        with self._lock:
            current = self._configs.get(function)
            if current is None:
                raise _missing(function_arn)
            config = self._configs[function] = parse(request, current)
        return config

    def get(self, function: str, function_arn: str) -> EventInvokeConfig:
        with self._lock:
            config = self._configs.get(function)
        if config is None:
            raise _missing(function_arn)
        return config

    def delete(self, function: str, function_arn: str) -> None:
        with self._lock:
            if self._configs.pop(function, None) is None:
                raise _missing(function_arn)

    def list(self, function: str) -> list[EventInvokeConfig]:
        with self._lock:
            config = self._configs.get(function)
        return [config] if config is not None else []


def _missing(function_arn: str) -> ResourceNotFound:
    return ResourceNotFound(f"The function {function_arn} doesn't have an EventInvokeConfig")
