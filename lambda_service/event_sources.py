"""SQS event source mappings: Create/List/Get/Update/DeleteEventSourceMapping, and a poller per
mapping that does what Lambda's does.

The poller long-polls the queue (never for more messages than the batch still needs) and fills a
batch until it holds `BatchSize` records, the `MaximumBatchingWindowInSeconds` since its first
record have passed, or the next record would take the event over 6 MB; it invokes the function
(RequestResponse, through the service's one dispatch point) with the `aws:sqs` records
(:mod:`~lambda_service.sqs_batches`). On success it deletes the batch, or, with
`ReportBatchItemFailures`, every record but the ones the answer names; a function error deletes
nothing. What is not deleted comes back after the queue's visibility timeout, and the queue's
redrive policy moves it to the DLQ after `maxReceiveCount` receives. Batches run concurrently up
to `ScalingConfig.MaximumConcurrency` and the function's own concurrency, whichever is lower; a
throttled invocation is retried with backoff. A disabled mapping stops polling (a message a poll
returns after the mapping was disabled is released at once, not invoked).
"""

from __future__ import annotations

import json
import math
import re
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import structlog
from tenacity import (
    RetryError,
    Retrying,
    retry_if_exception_type,
    stop_after_delay,
    wait_random_exponential,
)

from lambda_service import sqs_batches
from lambda_service.errors import (
    InvalidParameterValue,
    ResourceConflict,
    ResourceInUse,
    ResourceNotFound,
    ServiceError,
    TooManyRequests,
)
from lambda_service.service import MAX_SYNC_PAYLOAD, Invocation, LambdaService

log = structlog.get_logger()

REPORT_BATCH_ITEM_FAILURES = "ReportBatchItemFailures"
#: How long one receive waits for messages (Lambda uses SQS long polling; a shorter wait makes a
#: disable or a stop take effect sooner without costing a busy loop).
DEFAULT_POLL_WAIT_S = 5
_SQS_ARN = re.compile(r"^arn:(?P<partition>aws[a-z-]*):sqs:(?P<region>[a-z0-9-]+):"
                      r"(?P<account>\d{12}):(?P<name>[A-Za-z0-9_-]{1,80}(\.fifo)?)$")
_RECEIVE_LIMIT = 10


@dataclass(frozen=True)
class MappingConfig:
    """One mapping as the API describes it (EventSourceMappingConfiguration)."""

    uuid: str
    event_source_arn: str
    function: str
    function_arn: str
    batch_size: int
    window_s: int
    enabled: bool
    response_types: tuple[str, ...]
    max_concurrency: int | None
    state: str = "Creating"
    last_modified: float = field(default_factory=time.time)
    last_result: str = "No records processed"

    def to_json(self, arn_prefix: str) -> dict[str, Any]:
        return {"UUID": self.uuid, "BatchSize": self.batch_size,
                "MaximumBatchingWindowInSeconds": self.window_s,
                "EventSourceArn": self.event_source_arn, "FunctionArn": self.function_arn,
                "LastModified": self.last_modified, "LastProcessingResult": self.last_result,
                "State": self.state, "StateTransitionReason": "USER_INITIATED",
                "FunctionResponseTypes": list(self.response_types),
                "ScalingConfig": ({"MaximumConcurrency": self.max_concurrency}
                                  if self.max_concurrency else {}),
                "EventSourceMappingArn": f"{arn_prefix}:event-source-mapping:{self.uuid}"}


def _int(body: Mapping[str, Any], name: str, low: int, high: int) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidParameterValue(f"{name} must be an integer in {low}..{high}, "
                                    f"not {value!r}")
    return value


def _response_types(body: Mapping[str, Any]) -> tuple[str, ...] | None:
    value = body.get("FunctionResponseTypes")
    if value is None:
        return None
    if not isinstance(value, list) or any(v != REPORT_BATCH_ITEM_FAILURES for v in value):
        raise InvalidParameterValue("FunctionResponseTypes may only hold "
                                    f"{REPORT_BATCH_ITEM_FAILURES}")
    return tuple(dict.fromkeys(value))


def _max_concurrency(body: Mapping[str, Any]) -> tuple[bool, int | None]:
    if "ScalingConfig" not in body:
        return False, None
    scaling = body.get("ScalingConfig") or {}
    if not isinstance(scaling, Mapping):
        raise InvalidParameterValue("ScalingConfig must be an object")
    return True, _int(scaling, "MaximumConcurrency", 2, 1000)


def _check_batching(batch_size: int, window_s: int, fifo: bool) -> None:
    if fifo and batch_size > 10:
        raise InvalidParameterValue("BatchSize must be at most 10 for a FIFO queue")
    if batch_size > 10 and window_s < 1:
        raise InvalidParameterValue("Maximum batch window in seconds must be greater than 0 if "
                                    "maximum batch size is greater than 10")


class EventSourceMappings:
    """Every mapping of the endpoint and its poller."""

    def __init__(self, service: LambdaService, sqs: Callable[[], Any], *,
                 poll_wait_s: int = DEFAULT_POLL_WAIT_S) -> None:
        self.service = service
        self._sqs_factory = sqs
        self._sqs: Any = None
        self.poll_wait_s = poll_wait_s
        self._lock = threading.Lock()
        self._pollers: dict[str, SqsPoller] = {}
        spec = service.spec
        self._arn_prefix = f"arn:aws:lambda:{spec.region}:{spec.account_id}"

    @property
    def sqs(self) -> Any:
        """The SQS client, built on first use (an endpoint without mappings never loads boto3)."""
        with self._lock:
            if self._sqs is None:
                self._sqs = self._sqs_factory()
            return self._sqs

    # -- the API -----------------------------------------------------------------------------
    def create(self, body: Mapping[str, Any]) -> dict[str, Any]:
        name = body.get("FunctionName")
        if not isinstance(name, str) or not name:
            raise InvalidParameterValue("FunctionName is required")
        pool = self.service.resolve(name, None)
        arn = body.get("EventSourceArn")
        match = _SQS_ARN.match(arn) if isinstance(arn, str) else None
        if match is None:
            raise InvalidParameterValue(f"Unrecognized event source {arn!r}: the local cloud "
                                        "maps SQS queues (arn:aws:sqs:REGION:ACCOUNT:NAME)")
        window = _int(body, "MaximumBatchingWindowInSeconds", 0, 300) or 0
        batch = _int(body, "BatchSize", 1, 10000) or 10
        _check_batching(batch, window, match["name"].endswith(".fifo"))
        has_scaling, max_concurrency = _max_concurrency(body)
        queue_url = self._check_queue(match, pool.function.timeout_s)
        enabled = body.get("Enabled", True)
        if not isinstance(enabled, bool):
            raise InvalidParameterValue("Enabled must be true or false")
        config = MappingConfig(
            uuid=str(uuid.uuid4()), event_source_arn=arn, function=pool.function.name,
            function_arn=self.service.spec.function_arn(pool.function.name), batch_size=batch,
            window_s=window, enabled=enabled, response_types=_response_types(body) or (),
            max_concurrency=max_concurrency if has_scaling else None,
            state="Creating" if enabled else "Disabled")
        with self._lock:
            for other in self._pollers.values():
                current = other.config
                if (current.event_source_arn == arn and current.function == config.function
                        and current.state != "Deleting"):
                    raise ResourceConflict(
                        f'An event source mapping with SQS arn (" {arn} ") and function '
                        f'(" {config.function} ") already exists. Please update or delete the '
                        f"existing mapping with UUID {current.uuid}")
            poller = SqsPoller(self, config, queue_url, region=match["region"])
            self._pollers[config.uuid] = poller
        poller.start()
        log.info("event_source_mapping_created", uuid=config.uuid, function=config.function,
                 queue=arn, batch_size=batch, window_s=window, enabled=enabled,
                 max_concurrency=max_concurrency, response_types=list(config.response_types))
        return config.to_json(self._arn_prefix)

    def get(self, mapping_id: str) -> dict[str, Any]:
        return self._poller(mapping_id).config.to_json(self._arn_prefix)

    def list(self, event_source_arn: str | None, function: str | None) -> dict[str, Any]:
        name = self.service.resolve(function, None).function.name if function else None
        with self._lock:
            pollers = list(self._pollers.values())
        return {"EventSourceMappings": [
            p.config.to_json(self._arn_prefix) for p in pollers
            if (event_source_arn is None or p.config.event_source_arn == event_source_arn)
            and (name is None or p.config.function == name)]}

    def update(self, mapping_id: str, body: Mapping[str, Any]) -> dict[str, Any]:
        poller = self._poller(mapping_id)
        config = poller.config
        if config.state == "Deleting":
            raise ResourceInUse(f"The resource {mapping_id} is being deleted")
        changes: dict[str, Any] = {}
        if body.get("FunctionName"):
            pool = self.service.resolve(str(body["FunctionName"]), None)
            changes["function"] = pool.function.name
            changes["function_arn"] = self.service.spec.function_arn(pool.function.name)
        batch = _int(body, "BatchSize", 1, 10000)
        window = _int(body, "MaximumBatchingWindowInSeconds", 0, 300)
        _check_batching(batch or config.batch_size,
                        config.window_s if window is None else window,
                        config.event_source_arn.endswith(".fifo"))
        if batch is not None:
            changes["batch_size"] = batch
        if window is not None:
            changes["window_s"] = window
        types = _response_types(body)
        if types is not None:
            changes["response_types"] = types
        has_scaling, max_concurrency = _max_concurrency(body)
        if has_scaling:
            changes["max_concurrency"] = max_concurrency
        if "Enabled" in body:
            if not isinstance(body["Enabled"], bool):
                raise InvalidParameterValue("Enabled must be true or false")
            changes["enabled"] = body["Enabled"]
        updated = poller.reconfigure(changes)
        log.info("event_source_mapping_updated", uuid=mapping_id,
                 changes={k: v for k, v in changes.items() if k != "function_arn"})
        return updated.to_json(self._arn_prefix)

    def delete(self, mapping_id: str) -> dict[str, Any]:
        poller = self._poller(mapping_id)
        config = poller.begin_delete()
        log.info("event_source_mapping_deleting", uuid=mapping_id)
        return config.to_json(self._arn_prefix)

    def stats(self) -> dict[str, Any]:
        with self._lock:
            pollers = list(self._pollers.values())
        return {p.config.uuid: {"function": p.config.function, "state": p.config.state,
                                **p.stats()} for p in pollers}

    def stop(self) -> None:
        with self._lock:
            pollers = list(self._pollers.values())
        for poller in pollers:
            poller.stop()
        for poller in pollers:
            poller.join()

    # -- internals ---------------------------------------------------------------------------
    def _poller(self, mapping_id: str) -> SqsPoller:
        with self._lock:
            poller = self._pollers.get(mapping_id)
        if poller is None:
            raise ResourceNotFound(f"The resource you requested does not exist. (Service: "
                                   f"Lambda, Status Code: 404, Request ID: {uuid.uuid4()})")
        return poller

    def _forget(self, mapping_id: str) -> None:
        with self._lock:
            self._pollers.pop(mapping_id, None)

    def _check_queue(self, match: re.Match[str], function_timeout_s: float) -> str:
        """The queue's URL, after checking what Lambda checks: it exists, and its visibility
        timeout is not shorter than the function's timeout."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            url = self.sqs.get_queue_url(QueueName=match["name"],
                                         QueueOwnerAWSAccountId=match["account"])["QueueUrl"]
            attributes = self.sqs.get_queue_attributes(
                QueueUrl=url, AttributeNames=["VisibilityTimeout"])["Attributes"]
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            raise InvalidParameterValue(
                f"Invalid request provided: Error occurred while GetQueueAttributes. SQS Error "
                f"Code: {code}. SQS Error Message: {exc}") from exc
        except BotoCoreError as exc:
            raise ServiceError(f"SQS could not be reached: {exc}") from exc
        visibility = int(attributes.get("VisibilityTimeout", 30))
        if visibility < function_timeout_s:
            raise InvalidParameterValue(
                f"Queue visibility timeout: {visibility} seconds is less than Function "
                f"timeout: {math.ceil(function_timeout_s)} seconds")
        return str(url)


def _record_bytes(message: Mapping[str, Any]) -> int:
    """About what one message adds to the event (its body, attributes and the record's keys)."""
    attributes = message.get("MessageAttributes") or {}
    return (len(str(message.get("Body", "")).encode()) + 1024
            + sum(len(str(v.get("StringValue", v.get("BinaryValue", b"")))) * 2
                  for v in attributes.values()))


class SqsPoller:
    """One mapping's poll loop (a thread) and its batches in flight (a thread each)."""

    def __init__(self, owner: EventSourceMappings, config: MappingConfig, queue_url: str, *,
                 region: str) -> None:
        self.owner = owner
        self.config = config
        self.queue_url = queue_url
        self.region = region
        self._cond = threading.Condition()
        self._stopping = False
        self._in_flight = 0
        self._carry: list[dict[str, Any]] = []
        self._counters: Counter[str] = Counter()
        self._batch_sizes: Counter[int] = Counter()
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name=f"esm-{config.uuid[:8]}")

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()

    def join(self, timeout_s: float = 30.0) -> None:
        self._thread.join(timeout_s)

    def reconfigure(self, changes: Mapping[str, Any]) -> MappingConfig:
        with self._cond:
            config = replace(self.config, **changes, last_modified=time.time())
            if "enabled" in changes:
                if changes["enabled"] and config.state in ("Disabled", "Disabling"):
                    config = replace(config, state="Enabling")
                elif not changes["enabled"] and config.state not in ("Disabled",):
                    config = replace(config, state="Disabling")
            elif config.state == "Enabled":
                config = replace(config, state="Updating")
            self.config = config
            self._cond.notify_all()
            return config

    def begin_delete(self) -> MappingConfig:
        with self._cond:
            self.config = replace(self.config, state="Deleting", last_modified=time.time())
            self._stopping = True
            self._cond.notify_all()
            return self.config

    def stats(self) -> dict[str, Any]:
        with self._cond:
            return {"in_flight": self._in_flight, **self._counters,
                    "batch_sizes": {str(k): v for k, v in sorted(self._batch_sizes.items())}}

    # -- the poll loop -------------------------------------------------------------------------
    def _set_state(self, state: str) -> None:
        with self._cond:
            if self.config.state != state and self.config.state != "Deleting":
                self.config = replace(self.config, state=state)
                self._cond.notify_all()

    def _cap(self) -> int:
        function_concurrency = self.owner.service.resolve(self.config.function,
                                                          None).function.concurrency
        if self.config.max_concurrency:
            return min(self.config.max_concurrency, function_concurrency)
        return function_concurrency

    def _run(self) -> None:
        try:
            while True:
                with self._cond:
                    while not self._stopping and not self.config.enabled:
                        if self._in_flight == 0:
                            self._set_state("Disabled")
                        self._cond.wait(1.0)
                    if self._stopping:
                        break
                    if self.config.state in ("Creating", "Enabling", "Updating"):
                        self._set_state("Enabled")
                    while not self._stopping and self._in_flight >= self._cap():
                        self._cond.wait(1.0)
                    if self._stopping:
                        break
                    self._in_flight += 1
                    self._counters["max_in_flight"] = max(self._counters["max_in_flight"],
                                                          self._in_flight)
                try:
                    batch = self._gather()
                except Exception:
                    log.exception("event_source_poll_failed", uuid=self.config.uuid)
                    self._done()
                    self._pause(1.0)
                    continue
                if not batch:
                    self._done()
                    continue
                with self._cond:
                    usable = self.config.enabled and not self._stopping
                if not usable:  # received after a disable or a delete: give them back now
                    self._release(batch)
                    self._done()
                    continue
                threading.Thread(target=self._process, args=(batch,), daemon=True,
                                 name=f"esm-batch-{self.config.uuid[:8]}").start()
        finally:
            self._drain_and_finish()

    def _pause(self, seconds: float) -> None:
        with self._cond:
            self._cond.wait_for(lambda: self._stopping, seconds)

    def _done(self) -> None:
        with self._cond:
            self._in_flight -= 1
            self._cond.notify_all()

    def _drain_and_finish(self) -> None:
        with self._cond:
            self._cond.wait_for(lambda: self._in_flight == 0, 60.0)
        if self._carry:
            self._release(self._carry)
            self._carry = []
        if self.config.state == "Deleting":
            self.owner._forget(self.config.uuid)
            log.info("event_source_mapping_deleted", uuid=self.config.uuid)

    def _receive(self, count: int, wait_s: int) -> list[dict[str, Any]]:
        self._counters["polls"] += 1
        messages = self.owner.sqs.receive_message(
            QueueUrl=self.queue_url, MaxNumberOfMessages=max(1, min(_RECEIVE_LIMIT, count)),
            WaitTimeSeconds=wait_s, MessageSystemAttributeNames=["All"],
            MessageAttributeNames=["All"]).get("Messages", [])
        if not messages:
            self._counters["empty_polls"] += 1
        return list(messages)

    def _gather(self) -> list[dict[str, Any]]:
        """One batch: long-poll for its first message, then fill it within the window."""
        config = self.config
        batch, self._carry = self._carry[:config.batch_size], self._carry[config.batch_size:]
        if not batch:
            batch = self._receive(config.batch_size, self.owner.poll_wait_s)
            if not batch:
                return []
        deadline = time.monotonic() + config.window_s
        size = sum(_record_bytes(m) for m in batch)
        while len(batch) < config.batch_size and config.window_s > 0:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self._stopping:
                break
            more = self._receive(config.batch_size - len(batch), min(20, int(remaining)))
            if not more and remaining < 1:
                time.sleep(min(remaining, 0.05))
            for message in more:
                size += _record_bytes(message)
                if size > MAX_SYNC_PAYLOAD - 64 * 1024:  # the next batch starts with it
                    self._carry.append(message)
                else:
                    batch.append(message)
            if self._carry:
                break
        return batch

    def _process(self, batch: list[dict[str, Any]]) -> None:
        config = self.config
        try:
            records = [sqs_batches.sqs_record(m, event_source_arn=config.event_source_arn,
                                              region=self.region) for m in batch]
            ids = [r["messageId"] for r in records]
            with self._cond:
                self._counters["batches"] += 1
                self._counters["records"] += len(records)
                self._batch_sizes[len(records)] += 1
            failed = self._invoke(config, records, ids)
            keep = set(ids) if failed is sqs_batches.ALL else failed
            done = [m for m in batch if m["MessageId"] not in keep]
            self._delete(done)
            with self._cond:
                self._counters["deleted"] += len(done)
                self._counters["failed_records"] += len(batch) - len(done)
                result = "OK" if not keep else "PROBLEM: Function call failed"
                self.config = replace(self.config, last_result=result)
            log.info("event_source_batch", uuid=config.uuid, function=config.function,
                     records=len(batch), deleted=len(done), failed=len(batch) - len(done))
        except Exception:
            log.exception("event_source_batch_failed", uuid=config.uuid)
        finally:
            self._done()

    def _invoke(self, config: MappingConfig, records: list[dict[str, Any]],
                ids: list[str]) -> set[str] | None:
        """Run the function on the batch; the ids that failed (ALL: the whole batch)."""
        payload = json.dumps({"Records": records}).encode()
        try:
            for attempt in Retrying(retry=retry_if_exception_type(TooManyRequests),
                                    wait=wait_random_exponential(multiplier=0.05, max=2.0),
                                    stop=stop_after_delay(30.0), reraise=False):
                with attempt:
                    if attempt.retry_state.attempt_number > 1:
                        self._count("throttled")
                    outcome = self.owner.service.invoke(
                        Invocation(function=config.function, payload=payload))
        except RetryError:
            log.warning("event_source_throttled", uuid=config.uuid, records=len(records))
            return sqs_batches.ALL
        except ServiceError as exc:
            log.warning("event_source_invoke_failed", uuid=config.uuid, error=exc.message)
            return sqs_batches.ALL
        result = outcome.result
        if result is None or result.function_error:
            self._count("function_errors")
            return sqs_batches.ALL
        if REPORT_BATCH_ITEM_FAILURES not in config.response_types:
            return set()
        return sqs_batches.failed_ids(result.payload, ids)

    def _count(self, name: str) -> None:
        with self._cond:
            self._counters[name] += 1

    def _delete(self, messages: list[dict[str, Any]]) -> None:
        for start in range(0, len(messages), 10):
            chunk = messages[start:start + 10]
            response = self.owner.sqs.delete_message_batch(QueueUrl=self.queue_url, Entries=[
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(chunk)])
            for failure in response.get("Failed", []):
                log.warning("event_source_delete_failed", uuid=self.config.uuid,
                            code=failure.get("Code"), detail=failure.get("Message"))

    def _release(self, messages: list[dict[str, Any]]) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        for start in range(0, len(messages), 10):
            chunk = messages[start:start + 10]
            try:
                self.owner.sqs.change_message_visibility_batch(
                    QueueUrl=self.queue_url, Entries=[
                        {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"],
                         "VisibilityTimeout": 0} for i, m in enumerate(chunk)])
            except (BotoCoreError, ClientError) as exc:  # they come back after the timeout
                log.warning("event_source_release_failed", uuid=self.config.uuid,
                            error=str(exc))
        with self._cond:
            self._counters["released"] += len(messages)
