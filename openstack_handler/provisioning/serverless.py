"""Serverless mode (the course's first Lambda generation), from the one ResourceSpec: the input
bucket invokes the video function itself, no daemon in between.

`provision_trigger` is the Lambda side of the input bucket's trigger, for a function that exists
(on AWS `aws provision --image-uri` made it; on the local cloud our Lambda service runs it), in
either mode:

- **serverless**: the permission that lets ``s3.amazonaws.com`` invoke the function for the input
  bucket of this account only (``AddPermission`` with ``SourceArn`` and ``SourceAccount``: the
  confused-deputy guard), the function's asynchronous settings (``PutFunctionEventInvokeConfig``:
  ``MaximumRetryAttempts``, ``MaximumEventAgeInSeconds``, the failure queue as its ``OnFailure``
  destination), then the bucket's notification switched from the input queue to the function
  in one write (S3 checks the permission when the notification is written, so it comes first).
- **daemon**: the bucket's notification is the input queue's (`provision` wrote it) and the S3
  permission is removed: nothing but the daemon should invoke the function.

Every step reads first and writes only what differs: a second run changes nothing.
"""

from __future__ import annotations

import json
from typing import Any

import structlog

from openstack_handler.provisioning.aws import ensure_input_trigger
from openstack_handler.provisioning.spec import (
    Change,
    Provisioned,
    ProvisioningError,
    ResourceSpec,
    SessionLike,
)

log = structlog.get_logger()

#: the statement that lets the input bucket invoke the function (serverless mode only)
S3_INVOKE_SID = "InputBucketInvokesFunction"


def s3_permission(spec: ResourceSpec, provisioned: Provisioned) -> dict[str, str]:
    """AddPermission's arguments: S3, for the input bucket of this account, and nobody else."""
    return {"StatementId": S3_INVOKE_SID, "Action": "lambda:InvokeFunction",
            "Principal": "s3.amazonaws.com",
            "SourceArn": f"arn:{provisioned.partition}:s3:::{provisioned.input_bucket}",
            "SourceAccount": provisioned.account_id}


def provision_trigger(session: SessionLike, spec: ResourceSpec,
                      provisioned: Provisioned) -> tuple[Change, ...]:
    """Converge the Lambda side of the input bucket's trigger to *spec.mode*; the changes."""
    lam = session.client("lambda")
    changes: list[Change] = []
    function = spec.function_name
    try:
        function_arn = str(lam.get_function(FunctionName=function)["Configuration"]["FunctionArn"])
    except lam.exceptions.ResourceNotFoundException as exc:
        if spec.mode == "daemon":
            return ()  # no function, no permission to remove
        raise ProvisioningError(f"serverless mode needs the function {function}: provision it "
                                "first (aws provision --image-uri)") from exc
    statement = _statement(lam, function, S3_INVOKE_SID)
    if spec.mode == "daemon":
        if statement is not None:
            lam.remove_permission(FunctionName=function, StatementId=S3_INVOKE_SID)
            changes.append(Change("lambda permission", f"{function}/{S3_INVOKE_SID}", "removed",
                                  "daemon mode: only the daemon invokes the function"))
    else:
        _ensure_s3_permission(lam, spec, provisioned, statement, changes)
        _ensure_event_invoke_config(lam, spec, provisioned, changes)
        ensure_input_trigger(session.client("s3"), spec.input_bucket, changes,
                             function_arn=function_arn, prefix=spec.trigger_prefix,
                             suffix=spec.trigger_suffix)
    for change in changes:
        log.info("provisioned", kind=change.kind, name=change.name, action=change.action,
                 detail=change.detail)
    return tuple(changes)


def _statement(lam: Any, function: str, sid: str) -> dict[str, Any] | None:
    try:
        policy = json.loads(lam.get_policy(FunctionName=function)["Policy"])
    except lam.exceptions.ResourceNotFoundException:
        return None
    return next((s for s in policy.get("Statement", []) if s.get("Sid") == sid), None)


def _conditions(statement: dict[str, Any]) -> tuple[str, str]:
    condition = statement.get("Condition", {})
    return (str(condition.get("ArnLike", {}).get("AWS:SourceArn", "")),
            str(condition.get("StringEquals", {}).get("AWS:SourceAccount", "")))


def _ensure_s3_permission(lam: Any, spec: ResourceSpec, provisioned: Provisioned,
                          current: dict[str, Any] | None, changes: list[Change]) -> None:
    wanted = s3_permission(spec, provisioned)
    name = f"{spec.function_name}/{S3_INVOKE_SID}"
    if current is not None:
        principal = current.get("Principal", {})
        if (_conditions(current) == (wanted["SourceArn"], wanted["SourceAccount"])
                and current.get("Action") == wanted["Action"]
                and (principal.get("Service") if isinstance(principal, dict) else principal)
                == wanted["Principal"]):
            return
        lam.remove_permission(FunctionName=spec.function_name, StatementId=S3_INVOKE_SID)
    lam.add_permission(FunctionName=spec.function_name, **wanted)
    changes.append(Change("lambda permission", name, "created" if current is None else "updated",
                          f"s3.amazonaws.com for {wanted['SourceArn']} in account "
                          f"{wanted['SourceAccount']}"))


def _ensure_event_invoke_config(lam: Any, spec: ResourceSpec, provisioned: Provisioned,
                                changes: list[Change]) -> None:
    desired = {"MaximumRetryAttempts": spec.async_max_retry_attempts,
               "MaximumEventAgeInSeconds": spec.async_max_event_age_s,
               "DestinationConfig": {"OnFailure": {"Destination": provisioned.failure_queue_arn}}}
    try:
        current = lam.get_function_event_invoke_config(FunctionName=spec.function_name)
    except lam.exceptions.ResourceNotFoundException:
        current = None
    if current is not None and all(current.get(k) == desired[k] for k in (
            "MaximumRetryAttempts", "MaximumEventAgeInSeconds")) and current.get(
            "DestinationConfig", {}).get("OnFailure", {}).get(
            "Destination") == provisioned.failure_queue_arn:
        return
    lam.put_function_event_invoke_config(FunctionName=spec.function_name, **desired)
    changes.append(Change("lambda event invoke config", spec.function_name,
                          "created" if current is None else "updated",
                          f"{spec.async_max_retry_attempts} retries, max age "
                          f"{spec.async_max_event_age_s} s, on failure -> "
                          f"{provisioned.failure_queue_arn}"))
