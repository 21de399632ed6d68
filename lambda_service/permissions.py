"""Functions' resource-based policies: AddPermission, GetPolicy, RemovePermission.

The local cloud has no IAM, but a Function URL with auth type NONE still needs its function's
policy to grant public access, as on AWS: since October 2025 two statements, `principal "*"`
for `lambda:InvokeFunctionUrl` with `lambda:FunctionUrlAuthType = NONE` and for
`lambda:InvokeFunction` with `lambda:InvokedViaFunctionUrl = true`. Without them the URL
answers 403, so a provisioning that forgets them fails here as it would there.
"""

from __future__ import annotations

import json
import re
import threading
import uuid
from collections.abc import Mapping
from typing import Any

from lambda_service.errors import (
    InvalidParameterValue,
    PreconditionFailed,
    ResourceConflict,
    ResourceNotFound,
)

_STATEMENT_ID = re.compile(r"^[a-zA-Z0-9-_]{1,100}$")
_AUTH_TYPES = ("NONE", "AWS_IAM")


def _principal(value: str) -> Any:
    if value == "*":
        return "*"
    if value.endswith(".amazonaws.com"):
        return {"Service": value}
    if re.fullmatch(r"\d{12}", value):
        return {"AWS": f"arn:aws:iam::{value}:root"}
    return {"AWS": value}


def statement(request: Mapping[str, Any], function_arn: str) -> dict[str, Any]:
    """The policy statement AddPermission stores for *request* (its JSON body)."""
    sid = request.get("StatementId")
    if not isinstance(sid, str) or not _STATEMENT_ID.match(sid):
        raise InvalidParameterValue("StatementId must be 1-100 letters, digits, '-' or '_'")
    action = request.get("Action")
    if not isinstance(action, str) or not re.fullmatch(r"(lambda:[*]|lambda:[A-Za-z]+)", action):
        raise InvalidParameterValue(f"Action {action!r} is not a Lambda action")
    principal = request.get("Principal")
    if not isinstance(principal, str) or not principal.strip():
        raise InvalidParameterValue("Principal is required")
    conditions: dict[str, dict[str, str]] = {}
    auth_type = request.get("FunctionUrlAuthType")
    if auth_type is not None:
        if auth_type not in _AUTH_TYPES:
            raise InvalidParameterValue(f"FunctionUrlAuthType must be one of {_AUTH_TYPES}")
        if action != "lambda:InvokeFunctionUrl":
            raise InvalidParameterValue("FunctionUrlAuthType is only valid with the action "
                                        "lambda:InvokeFunctionUrl")
        conditions.setdefault("StringEquals", {})["lambda:FunctionUrlAuthType"] = auth_type
    via_url = request.get("InvokedViaFunctionUrl")
    if via_url:
        if action != "lambda:InvokeFunction":
            raise InvalidParameterValue("InvokedViaFunctionUrl is only valid with the action "
                                        "lambda:InvokeFunction")
        conditions.setdefault("Bool", {})["lambda:InvokedViaFunctionUrl"] = "true"
    if request.get("SourceArn"):
        conditions.setdefault("ArnLike", {})["AWS:SourceArn"] = str(request["SourceArn"])
    if request.get("SourceAccount"):
        conditions.setdefault("StringEquals", {})["AWS:SourceAccount"] = str(
            request["SourceAccount"])
    body: dict[str, Any] = {"Sid": sid, "Effect": "Allow", "Principal": _principal(principal),
                            "Action": action, "Resource": function_arn}
    if conditions:
        body["Condition"] = conditions
    return body


class Policies:
    """Each function's statements, in memory (like the rest of the local cloud's state)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._statements: dict[str, dict[str, dict[str, Any]]] = {}
        self._revisions: dict[str, str] = {}

    def add(self, function: str, function_arn: str, request: Mapping[str, Any]) -> dict[str, Any]:
        new = statement(request, function_arn)
        with self._lock:
            current = self._statements.setdefault(function, {})
            self._check_revision(function, request.get("RevisionId"))
            if new["Sid"] in current:
                raise ResourceConflict(
                    f"The statement id ({new['Sid']}) provided already exists. Please provide "
                    "a new statement id, or remove the existing statement.")
            current[new["Sid"]] = new
            self._revisions[function] = str(uuid.uuid4())
        return {"Statement": json.dumps(new)}

    def get(self, function: str) -> dict[str, Any]:
        with self._lock:
            current = self._statements.get(function)
            if not current:
                raise ResourceNotFound("The resource you requested does not exist.")
            policy = {"Version": "2012-10-17", "Id": "default",
                      "Statement": list(current.values())}
            return {"Policy": json.dumps(policy), "RevisionId": self._revisions[function]}

    def remove(self, function: str, sid: str, revision_id: str | None) -> None:
        with self._lock:
            current = self._statements.get(function) or {}
            if sid not in current:
                raise ResourceNotFound(f"Statement {sid} is not found in resource policy.")
            self._check_revision(function, revision_id)
            del current[sid]
            self._revisions[function] = str(uuid.uuid4())

    def forget(self, function: str) -> None:
        with self._lock:
            self._statements.pop(function, None)

    def allows_public_url(self, function: str) -> bool:
        """Whether the policy grants everyone both permissions a NONE-auth URL needs."""
        with self._lock:
            statements = list((self._statements.get(function) or {}).values())
        url_ok = any(s["Principal"] == "*" and s["Action"] in ("lambda:InvokeFunctionUrl",
                                                                 "lambda:*")
                     and s.get("Condition", {}).get("StringEquals", {}).get(
                         "lambda:FunctionUrlAuthType", "NONE") == "NONE"
                     for s in statements)
        invoke_ok = any(s["Principal"] == "*" and s["Action"] in ("lambda:InvokeFunction",
                                                                    "lambda:*")
                        for s in statements)
        return url_ok and invoke_ok

    def _check_revision(self, function: str, revision_id: Any) -> None:
        if revision_id and revision_id != self._revisions.get(function):
            raise PreconditionFailed("The RevisionId provided does not match the latest "
                                     "RevisionId for the Lambda function. Call the GetPolicy "
                                     "API to retrieve the latest RevisionId")
