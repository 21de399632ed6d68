"""Asynchronous (Event) invocations on the local Lambda endpoint, over HTTP with boto3 against the
real moto server: the event invoke config API, Lambda's retries after a function error (with its
delays, scaled by the spec's ``async_time_scale``), the maximum event age, the destination records
on SQS, and the resource policy S3 needs (AddPermission with SourceArn/SourceAccount)."""

from __future__ import annotations

import itertools
import json
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from lambda_service_helpers import serve
from polling import wait_for

from lambda_service.async_invoke import RETRY_DELAYS_S
from lambda_service.endpoint import LambdaEndpoint
from lambda_service.spec import EndpointSpec, FunctionSpec
from localcloud.moto_server import MotoServer

pytestmark = pytest.mark.integration

#: Lambda's minute becomes 1.2 s, its two minutes 2.4 s; the minimum event age (60 s) 1.2 s
SCALE = 0.02
ARN = "arn:aws:lambda:us-east-1:123456789012:function:{}"


@pytest.fixture(scope="module")
def endpoint(moto_server: MotoServer,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[LambdaEndpoint]:
    spec = EndpointSpec(functions=(
        FunctionSpec(name="flaky", handler="tests.lambda_service.handlers:flaky", memory_mb=256,
                     concurrency=2, timeout_s=10),
        FunctionSpec(name="single", handler="tests.lambda_service.handlers:flaky", memory_mb=256,
                     concurrency=1, timeout_s=10)),
        aws_endpoint_url=moto_server.url, credentials={"testing": "testing"},
        async_time_scale=SCALE)
    with serve(spec, tmp_path_factory, "lambda-async") as server:
        yield server


@pytest.fixture()
def configs(lam: Any) -> Iterator[Any]:
    """The lambda client; every function's event invoke config is deleted after the test."""
    yield lam
    for name in ("flaky", "single"):
        try:
            lam.delete_function_event_invoke_config(FunctionName=name)
        except lam.exceptions.ResourceNotFoundException:
            pass


def _queue(sqs: Any) -> tuple[str, str]:
    name = f"dest-{uuid.uuid4().hex[:8]}"
    url = sqs.create_queue(QueueName=name)["QueueUrl"]
    return url, f"arn:aws:sqs:us-east-1:123456789012:{name}"


def _records(sqs: Any, url: str, count: int, timeout_s: float = 15) -> list[dict[str, Any]]:
    got: list[dict[str, Any]] = []

    def enough() -> bool:
        for message in sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10,
                                           WaitTimeSeconds=1).get("Messages", []):
            got.append(json.loads(message["Body"]))
            sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
        return len(got) >= count

    wait_for(enough, timeout_s=timeout_s, interval_s=0, what=f"{count} destination record(s)")
    return got


def _attempts(tmp_path: Path, event_id: str) -> list[dict[str, Any]]:
    path = tmp_path / event_id
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _event(lam: Any, function: str, payload: dict[str, Any]) -> str:
    response = lam.invoke(FunctionName=function, InvocationType="Event",
                          Payload=json.dumps(payload).encode())
    assert response["StatusCode"] == 202
    return str(response["ResponseMetadata"]["RequestId"])


# -- the configuration API ----------------------------------------------------------------------
def test_event_invoke_config_put_get_update_list_delete(configs: Any, sqs: Any) -> None:
    lam = configs
    _, failure_arn = _queue(sqs)
    put = lam.put_function_event_invoke_config(
        FunctionName="flaky", MaximumRetryAttempts=1, MaximumEventAgeInSeconds=600,
        DestinationConfig={"OnFailure": {"Destination": failure_arn}})
    assert put["FunctionArn"] == ARN.format("flaky") + ":$LATEST"
    assert (put["MaximumRetryAttempts"], put["MaximumEventAgeInSeconds"]) == (1, 600)
    assert put["DestinationConfig"]["OnFailure"] == {"Destination": failure_arn}
    assert abs(put["LastModified"].timestamp() - time.time()) < 60

    # Update changes what it names and keeps the rest
    updated = lam.update_function_event_invoke_config(FunctionName="flaky",
                                                      MaximumRetryAttempts=0)
    assert (updated["MaximumRetryAttempts"], updated["MaximumEventAgeInSeconds"]) == (0, 600)
    assert updated["DestinationConfig"]["OnFailure"] == {"Destination": failure_arn}
    got = lam.get_function_event_invoke_config(FunctionName=ARN.format("flaky"))
    assert got["MaximumRetryAttempts"] == 0
    listed = lam.list_function_event_invoke_configs(FunctionName="flaky")
    assert [c["MaximumRetryAttempts"] for c in listed["FunctionEventInvokeConfigs"]] == [0]

    # Put replaces the whole configuration: what it leaves out is gone
    replaced = lam.put_function_event_invoke_config(FunctionName="flaky",
                                                    MaximumEventAgeInSeconds=60)
    assert "MaximumRetryAttempts" not in replaced
    assert replaced["DestinationConfig"]["OnFailure"] == {}

    lam.delete_function_event_invoke_config(FunctionName="flaky")
    with pytest.raises(lam.exceptions.ResourceNotFoundException, match="EventInvokeConfig"):
        lam.get_function_event_invoke_config(FunctionName="flaky")
    assert lam.list_function_event_invoke_configs(
        FunctionName="flaky")["FunctionEventInvokeConfigs"] == []


@pytest.mark.parametrize("arguments", [
    {"MaximumRetryAttempts": 3},
    {"MaximumRetryAttempts": -1},
    {"MaximumEventAgeInSeconds": 59},
    {"MaximumEventAgeInSeconds": 21601},
    {"DestinationConfig": {"OnFailure": {"Destination": "arn:aws:sns:us-east-1:123456789012:t"}}},
    {"DestinationConfig": {"OnFailure": {"Destination": "not-an-arn"}}},
])
def test_event_invoke_config_bad_values_are_refused_and_change_nothing(
        configs: Any, endpoint: LambdaEndpoint, arguments: dict[str, Any]) -> None:
    lam = configs
    # botocore checks the minimums itself: this client leaves every check to the endpoint
    unchecked = boto3.client("lambda", endpoint_url=endpoint.url, region_name="us-east-1",
                             aws_access_key_id="testing", aws_secret_access_key="testing",
                             config=Config(retries={"max_attempts": 0},
                                           parameter_validation=False))
    lam.put_function_event_invoke_config(FunctionName="flaky", MaximumRetryAttempts=1)
    with pytest.raises(ClientError) as caught:
        unchecked.put_function_event_invoke_config(FunctionName="flaky", **arguments)
    assert caught.value.response["Error"]["Code"] == "InvalidParameterValueException"
    assert lam.get_function_event_invoke_config(FunctionName="flaky")["MaximumRetryAttempts"] == 1


def test_event_invoke_config_of_what_does_not_exist(configs: Any) -> None:
    lam = configs
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.update_function_event_invoke_config(FunctionName="flaky", MaximumRetryAttempts=1)
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.delete_function_event_invoke_config(FunctionName="flaky")
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.put_function_event_invoke_config(FunctionName="nope", MaximumRetryAttempts=1)


# -- retries, event age, destinations ------------------------------------------------------------
def test_fails_twice_then_succeeds_after_lambdas_delays(configs: Any, sqs: Any,
                                                        tmp_path: Path) -> None:
    # GIVEN the default two retries and an on-success destination
    lam = configs
    url, arn = _queue(sqs)
    lam.put_function_event_invoke_config(FunctionName="flaky",
                                         DestinationConfig={"OnSuccess": {"Destination": arn}})
    # WHEN an event whose first two attempts fail is invoked asynchronously
    payload = {"id": "twice", "dir": str(tmp_path), "fail_times": 2}
    request_id = _event(lam, "flaky", payload)
    # THEN it ran three times, with the same request id, about 1 and then 2 (scaled) minutes apart
    [record] = _records(sqs, url, 1)
    attempts = _attempts(tmp_path, "twice")
    assert [a["request_id"] for a in attempts] == [request_id] * 3
    gaps = [b["at"] - a["at"] for a, b in itertools.pairwise(attempts)]
    for gap, delay in zip(gaps, RETRY_DELAYS_S, strict=True):
        assert delay * SCALE <= gap < delay * SCALE + 1.0
    # AND the success record says so
    assert record["requestContext"] == {"requestId": request_id,
                                        "functionArn": ARN.format("flaky") + ":$LATEST",
                                        "condition": "Success", "approximateInvokeCount": 3}
    assert record["requestPayload"] == payload
    assert record["responseContext"] == {"statusCode": 200, "executedVersion": "$LATEST"}
    assert record["responsePayload"] == {"attempts": 3, "id": "twice"}


def test_always_fails_goes_to_the_on_failure_queue_after_the_configured_attempts(
        configs: Any, sqs: Any, tmp_path: Path) -> None:
    lam = configs
    url, arn = _queue(sqs)
    lam.put_function_event_invoke_config(FunctionName="flaky", MaximumRetryAttempts=1,
                                         DestinationConfig={"OnFailure": {"Destination": arn}})
    payload = {"id": "always", "dir": str(tmp_path), "fail_times": -1}
    request_id = _event(lam, "flaky", payload)
    [record] = _records(sqs, url, 1)
    assert len(_attempts(tmp_path, "always")) == 2  # the first run and its one retry
    assert record["version"] == "1.0"
    assert record["timestamp"].endswith("Z")
    assert record["requestContext"] == {"requestId": request_id,
                                        "functionArn": ARN.format("flaky") + ":$LATEST",
                                        "condition": "RetriesExhausted",
                                        "approximateInvokeCount": 2}
    assert record["requestPayload"] == payload
    assert record["responseContext"] == {"statusCode": 200, "executedVersion": "$LATEST",
                                         "functionError": "Unhandled"}
    assert record["responsePayload"]["errorType"] == "RuntimeError"
    assert "attempt 2 fails on purpose" in record["responsePayload"]["errorMessage"]
    time.sleep(RETRY_DELAYS_S[1] * SCALE + 0.5)  # no third run comes later
    assert len(_attempts(tmp_path, "always")) == 2


def test_no_retries_means_one_run(configs: Any, sqs: Any, tmp_path: Path) -> None:
    lam = configs
    url, arn = _queue(sqs)
    lam.put_function_event_invoke_config(FunctionName="flaky", MaximumRetryAttempts=0,
                                         DestinationConfig={"OnFailure": {"Destination": arn}})
    _event(lam, "flaky", {"id": "once", "dir": str(tmp_path), "fail_times": 1})
    [record] = _records(sqs, url, 1)
    assert record["requestContext"]["approximateInvokeCount"] == 1
    assert len(_attempts(tmp_path, "once")) == 1


def test_an_event_too_old_for_its_retry_is_discarded(configs: Any, sqs: Any,
                                                     tmp_path: Path) -> None:
    # GIVEN the shortest event age Lambda allows (a minute): the first retry falls due at it
    lam = configs
    url, arn = _queue(sqs)
    lam.put_function_event_invoke_config(FunctionName="flaky", MaximumEventAgeInSeconds=60,
                                         DestinationConfig={"OnFailure": {"Destination": arn}})
    _event(lam, "flaky", {"id": "old", "dir": str(tmp_path), "fail_times": -1})
    [record] = _records(sqs, url, 1)
    # THEN it ran once, was given up at its retry, and the record has the one response
    assert len(_attempts(tmp_path, "old")) == 1
    assert record["requestContext"]["condition"] == "EventAgeExceeded"
    assert record["requestContext"]["approximateInvokeCount"] == 1
    assert record["responseContext"]["functionError"] == "Unhandled"


def test_an_event_that_waited_too_long_in_the_queue_never_runs(configs: Any, sqs: Any,
                                                               tmp_path: Path) -> None:
    # GIVEN a function with one environment, busy for longer than the maximum event age
    lam = configs
    url, arn = _queue(sqs)
    lam.put_function_event_invoke_config(FunctionName="single", MaximumEventAgeInSeconds=60,
                                         DestinationConfig={"OnFailure": {"Destination": arn}})
    _event(lam, "single", {"id": "busy", "dir": str(tmp_path), "sleep": 60 * SCALE + 1.0})
    wait_for(lambda: _attempts(tmp_path, "busy"), timeout_s=10, what="the first event to run")
    # WHEN another event waits behind it
    request_id = _event(lam, "single", {"id": "waiting", "dir": str(tmp_path)})
    [record] = _records(sqs, url, 1)
    # THEN it is discarded without running, and its record has no response
    assert _attempts(tmp_path, "waiting") == []
    assert record["requestContext"] == {"requestId": request_id,
                                        "functionArn": ARN.format("single") + ":$LATEST",
                                        "condition": "EventAgeExceeded",
                                        "approximateInvokeCount": 0}
    assert "responseContext" not in record and "responsePayload" not in record


def _hold_the_slot(lam: Any, tmp_path: Path, seconds: float) -> threading.Thread:
    """A synchronous invocation of "single" (one environment) that keeps it for *seconds*."""
    thread = threading.Thread(target=lambda: lam.invoke(FunctionName="single", Payload=json.dumps(
        {"id": "holder", "dir": str(tmp_path), "sleep": seconds}).encode()), daemon=True)
    thread.start()
    wait_for(lambda: _attempts(tmp_path, "holder"), timeout_s=10, what="the holder to run")
    return thread


def test_a_throttled_event_is_tried_again_with_backoff_and_runs_once(
        configs: Any, sqs: Any, tmp_path: Path, endpoint: LambdaEndpoint) -> None:
    # GIVEN the one environment held by a synchronous invocation for 2 s
    lam = configs
    url, arn = _queue(sqs)
    lam.put_function_event_invoke_config(FunctionName="single", MaximumRetryAttempts=0,
                                         DestinationConfig={"OnSuccess": {"Destination": arn}})
    before = endpoint.health()["functions"]["single"]
    holder = _hold_the_slot(lam, tmp_path, 2.0)
    # WHEN an event arrives meanwhile
    request_id = _event(lam, "single", {"id": "throttled", "dir": str(tmp_path)})
    [record] = _records(sqs, url, 1)
    holder.join(10)
    # THEN it found no environment, went back with backoff (not a retry: none are allowed), and
    # ran once the environment was free
    [attempt] = _attempts(tmp_path, "throttled")
    [held] = _attempts(tmp_path, "holder")
    assert attempt["at"] >= held["at"] + 2.0
    assert record["requestContext"]["requestId"] == request_id
    assert record["requestContext"]["condition"] == "Success"
    assert record["requestContext"]["approximateInvokeCount"] == 1
    after = endpoint.health()["functions"]["single"]
    # 1, 2, 4... s scaled: 2 s of holding is about 6 to 8 throttles
    assert 3 <= after.get("throttle_retries", 0) - before.get("throttle_retries", 0) <= 10
    assert after.get("retries", 0) == before.get("retries", 0)


def test_an_event_throttled_past_its_maximum_age_is_discarded_unrun(
        configs: Any, sqs: Any, tmp_path: Path) -> None:
    # GIVEN a maximum age of 60 s (1.2 s scaled) and the one environment held for 3 s
    lam = configs
    url, arn = _queue(sqs)
    lam.put_function_event_invoke_config(FunctionName="single", MaximumEventAgeInSeconds=60,
                                         DestinationConfig={"OnFailure": {"Destination": arn}})
    holder = _hold_the_slot(lam, tmp_path, 3.0)
    request_id = _event(lam, "single", {"id": "too-late", "dir": str(tmp_path)})
    # THEN its throttles end with the event's age: discarded, never run
    [record] = _records(sqs, url, 1)
    holder.join(10)
    assert _attempts(tmp_path, "too-late") == []
    assert record["requestContext"] == {"requestId": request_id,
                                        "functionArn": ARN.format("single") + ":$LATEST",
                                        "condition": "EventAgeExceeded",
                                        "approximateInvokeCount": 0}


def test_without_a_config_an_error_is_retried_twice(configs: Any, tmp_path: Path,
                                                    endpoint: LambdaEndpoint) -> None:
    lam = configs
    _event(lam, "flaky", {"id": "default", "dir": str(tmp_path), "fail_times": -1})
    wait_for(lambda: len(_attempts(tmp_path, "default")) == 3,
             timeout_s=sum(RETRY_DELAYS_S) * SCALE + 10, what="three attempts")
    time.sleep(RETRY_DELAYS_S[1] * SCALE + 0.5)
    assert len(_attempts(tmp_path, "default")) == 3
    stats = endpoint.health()["functions"]["flaky"]
    assert stats["events_failed"] >= 1 and stats["retries_pending"] == 0


# -- the permission S3 needs ---------------------------------------------------------------------
def test_add_permission_for_s3_keeps_source_arn_and_account(lam: Any) -> None:
    sid = f"s3-{uuid.uuid4().hex[:8]}"
    lam.add_permission(FunctionName="flaky", StatementId=sid, Action="lambda:InvokeFunction",
                       Principal="s3.amazonaws.com", SourceArn="arn:aws:s3:::input-bucket",
                       SourceAccount="123456789012")
    try:
        policy = json.loads(lam.get_policy(FunctionName="flaky")["Policy"])
        [statement] = [s for s in policy["Statement"] if s["Sid"] == sid]
        assert statement["Principal"] == {"Service": "s3.amazonaws.com"}
        assert statement["Condition"] == {
            "ArnLike": {"AWS:SourceArn": "arn:aws:s3:::input-bucket"},
            "StringEquals": {"AWS:SourceAccount": "123456789012"}}
    finally:
        lam.remove_permission(FunctionName="flaky", StatementId=sid)
    try:
        remaining = json.loads(lam.get_policy(FunctionName="flaky")["Policy"])["Statement"]
    except lam.exceptions.ResourceNotFoundException:
        remaining = []
    assert sid not in [s["Sid"] for s in remaining]
