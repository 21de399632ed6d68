"""What an SQS event source mapping hands a function and reads back, as pure functions: the
`aws:sqs` records of one batch, and which records the function's answer says failed.

The rules for the answer are Lambda's ("Handling errors for an SQS event source", partial batch
responses): with `ReportBatchItemFailures`, a null or empty response, or an empty or null
`batchItemFailures`, is a complete success; invalid JSON, an item without `itemIdentifier`, or
one naming no message of the batch is a complete failure; otherwise exactly the named records
failed. Without `ReportBatchItemFailures` a successful invocation is a complete success.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Collection, Mapping
from typing import Any

#: A complete failure: every record of the batch is left to the visibility timeout.
ALL = None


def _message_attribute(value: Mapping[str, Any]) -> dict[str, Any]:
    binary = value.get("BinaryValue")
    out: dict[str, Any] = {"stringListValues": [], "binaryListValues": [],
                           "dataType": value.get("DataType", "String")}
    if "StringValue" in value:
        out["stringValue"] = value["StringValue"]
    if binary is not None:
        out["binaryValue"] = base64.b64encode(binary).decode("ascii")
    return out


def sqs_record(message: Mapping[str, Any], *, event_source_arn: str,
               region: str) -> dict[str, Any]:
    """One received SQS message (ReceiveMessage's shape) as Lambda's `aws:sqs` record."""
    record: dict[str, Any] = {
        "messageId": message["MessageId"], "receiptHandle": message["ReceiptHandle"],
        "body": message.get("Body", ""), "attributes": dict(message.get("Attributes") or {}),
        "messageAttributes": {name: _message_attribute(value) for name, value in
                              (message.get("MessageAttributes") or {}).items()},
        "md5OfBody": message.get("MD5OfBody", ""), "eventSource": "aws:sqs",
        "eventSourceARN": event_source_arn, "awsRegion": region}
    if message.get("MD5OfMessageAttributes"):
        record["md5OfMessageAttributes"] = message["MD5OfMessageAttributes"]
    return record


def failed_ids(payload: bytes, batch_ids: Collection[str]) -> set[str] | None:
    """The message ids a ReportBatchItemFailures answer names as failed; ALL (None) for an
    answer that makes the whole batch a failure."""
    if not payload.strip():
        return set()
    try:
        answer = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return ALL
    if not isinstance(answer, Mapping):
        return set()
    items = answer.get("batchItemFailures")
    if items is None:
        return set()
    if not isinstance(items, list):
        return ALL
    failed = set()
    for item in items:
        if not isinstance(item, Mapping) or set(item) != {"itemIdentifier"}:
            return ALL
        identifier = item["itemIdentifier"]
        if not isinstance(identifier, str) or not identifier or identifier not in batch_ids:
            return ALL
        failed.add(identifier)
    return failed
