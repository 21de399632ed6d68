"""The pure parts of the asynchronous-invocation contract and of S3's permission check: the
event invoke config's Put/Update rules, the destination record, and which policy statements let
S3 invoke a function for a bucket."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from lambda_service.async_invoke import AsyncEvent, destination_record
from lambda_service.errors import InvalidParameterValue
from lambda_service.event_invoke_config import parse
from lambda_service.pool import InvocationResult
from localcloud.s3_lambda_delivery import _allows_s3

QUEUE = "arn:aws:sqs:us-east-1:123456789012:failed"


def test_put_resets_what_it_leaves_out_and_update_keeps_it() -> None:
    put = parse({"MaximumRetryAttempts": 0,
                 "DestinationConfig": {"OnFailure": {"Destination": QUEUE}}})
    assert (put.retries, put.event_age_s, put.on_failure) == (0, 21600, QUEUE)
    updated = parse({"MaximumEventAgeInSeconds": 60}, put)
    assert (updated.retries, updated.event_age_s, updated.on_failure) == (0, 60, QUEUE)
    replaced = parse({"MaximumEventAgeInSeconds": 60})
    assert (replaced.retries, replaced.on_failure) == (2, None)
    cleared = parse({"DestinationConfig": {"OnFailure": {}}}, put)
    assert cleared.on_failure is None and cleared.retries == 0


@pytest.mark.parametrize("request_body", [
    {"MaximumRetryAttempts": True}, {"MaximumRetryAttempts": "1"},
    {"MaximumEventAgeInSeconds": 60.5}, {"Qualifier": "x"},
    {"DestinationConfig": []}, {"DestinationConfig": {"OnFailure": "arn"}},
    {"DestinationConfig": {"OnSuccess": {"Destination": "arn:aws:lambda:us-east-1:1:function:f"}}},
])
def test_bad_configs_are_refused(request_body: dict[str, object]) -> None:
    with pytest.raises(InvalidParameterValue):
        parse(request_body)


def test_the_destination_record_has_lambdas_shape() -> None:
    event = AsyncEvent("f", "rid", b'{"Records": []}', 0.0, attempts=3,
                       last_result=InvocationResult("rid", b'{"errorMessage": "boom"}',
                                                    "Unhandled"))
    record = destination_record(event, "arn:aws:lambda:us-east-1:123456789012:function:f",
                                "RetriesExhausted", now=datetime(2026, 1, 2, 3, 4, 5, 678000,
                                                                 tzinfo=UTC))
    assert record == {
        "version": "1.0", "timestamp": "2026-01-02T03:04:05.678Z",
        "requestContext": {"requestId": "rid",
                           "functionArn": "arn:aws:lambda:us-east-1:123456789012:function:f"
                                          ":$LATEST",
                           "condition": "RetriesExhausted", "approximateInvokeCount": 3},
        "requestPayload": {"Records": []},
        "responseContext": {"statusCode": 200, "executedVersion": "$LATEST",
                            "functionError": "Unhandled"},
        "responsePayload": {"errorMessage": "boom"}}
    never_ran = destination_record(AsyncEvent("f", "rid", b"{}", 0.0), "arn", "EventAgeExceeded")
    assert "responseContext" not in never_ran and never_ran["requestPayload"] == {}


BUCKET = "arn:aws:s3:::input"


@pytest.mark.parametrize(("statement", "allowed"), [
    ({"Principal": {"Service": "s3.amazonaws.com"}, "Action": "lambda:InvokeFunction"}, True),
    ({"Principal": {"Service": "s3.amazonaws.com"}, "Action": "lambda:InvokeFunction",
      "Condition": {"ArnLike": {"AWS:SourceArn": "arn:aws:s3:::in*"},
                    "StringEquals": {"AWS:SourceAccount": "123456789012"}}}, True),
    ({"Principal": {"Service": "s3.amazonaws.com"}, "Action": "lambda:InvokeFunction",
      "Condition": {"ArnLike": {"AWS:SourceArn": "arn:aws:s3:::other"}}}, False),
    ({"Principal": {"Service": "s3.amazonaws.com"}, "Action": "lambda:InvokeFunction",
      "Condition": {"StringEquals": {"AWS:SourceAccount": "210987654321"}}}, False),
    ({"Principal": {"Service": "sns.amazonaws.com"}, "Action": "lambda:InvokeFunction"}, False),
    ({"Principal": {"Service": "s3.amazonaws.com"}, "Action": "lambda:InvokeFunctionUrl"}, False),
    ({"Principal": "*", "Action": "lambda:*", "Effect": "Deny"}, False),
])
def test_which_statements_let_s3_invoke(statement: dict[str, object], allowed: bool) -> None:
    assert _allows_s3(statement, BUCKET, "123456789012") is allowed
