"""The camera path's Lambda side, from the one ResourceSpec: its three functions (on AWS, one image
with three commands and a least-privilege role each), a Function URL for the one-stage and the
two-stage entry (auth type `spec.url_auth_type`), the permission a public (NONE) URL needs, and
the request queue's trigger (an SQS event source mapping with partial batch responses).

Applied with the same boto3 calls by `openstack-handler aws provision` (AWS), `local up` (the
local Lambda service) and the `aws_resources` role; like :mod:`openstack_handler.provisioning`
every step reads first and writes only what differs, so a second run changes nothing.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import structlog

from openstack_handler.provisioning.aws import ensure_image_function
from openstack_handler.provisioning.spec import (
    Change,
    Provisioned,
    ProvisionedFunction,
    ResourceSpec,
    SessionLike,
)

log = structlog.get_logger()

#: The statements a public (auth type NONE) URL needs; since October 2025 Lambda wants both.
PUBLIC_URL_SID = "FunctionURLAllowPublicAccess"
PUBLIC_INVOKE_SID = "FunctionURLAllowInvokeAction"
REPORT_BATCH_ITEM_FAILURES = "ReportBatchItemFailures"


@dataclass(frozen=True, kw_only=True)
class ProvisionedCamera:
    """Where a camera sends frames and reads answers, plus what this run changed."""

    frame_url: str  # one stage: the answer comes back over HTTP
    detect_url: str  # two stages: the answer comes on the response queue
    auth_type: str
    response_queue_url: str
    request_queue_url: str
    frames_bucket: str  # where the earliest camera put its frames (GET URL?bucket=&key=)
    mapping_uuid: str
    changes: tuple[Change, ...] = field(default=(), compare=False)

    @property
    def changed(self) -> bool:
        return bool(self.changes)

    def to_json(self) -> dict[str, str]:
        return {"frame_url": self.frame_url, "detect_url": self.detect_url,
                "auth_type": self.auth_type, "response_queue_url": self.response_queue_url,
                "request_queue_url": self.request_queue_url,
                "frames_bucket": self.frames_bucket}


def camera_environment(spec: ResourceSpec, provisioned: Provisioned, function: str,
                       gallery_path: str, extra: Mapping[str, str] | None = None,
                       ) -> dict[str, str]:
    """A camera function's configuration (docs/contracts.md, "Function configuration").

    The one-stage function answers over HTTP only: given RESPONSE_QUEUE_URL it would also put
    every answer on the response queue, where no client takes it and the two-stage clients pass
    it round until its DLQ.
    """
    environment = {"GALLERY_PATH": gallery_path, "STUDENTS_TABLE": provisioned.students_table,
                   "FRAMES_BUCKET": provisioned.frames_bucket}
    if function != spec.detect_function_name and provisioned.camera_tracks_table:
        environment["CAMERA_TRACKS_TABLE"] = provisioned.camera_tracks_table
    if function != spec.frame_function_name:
        environment.update(RESPONSE_QUEUE_URL=provisioned.response_queue_url,
                           REQUEST_QUEUE_URL=provisioned.request_queue_url)
    return {**environment, **(extra or {})}


def camera_policies(spec: ResourceSpec, provisioned: Provisioned) -> dict[str, dict[str, Any]]:
    """Least privilege per camera function: each may do what its entry point does, no more."""
    p, region, account = provisioned.partition, provisioned.region, provisioned.account_id
    frames = f"arn:{p}:s3:::{provisioned.frames_bucket}/*"
    students = {"Sid": "ReadStudents", "Effect": "Allow",
                "Action": ["dynamodb:GetItem", "dynamodb:BatchGetItem"],
                "Resource": provisioned.students_table_arn}
    tracks = {"Sid": "KeepCameraTracks", "Effect": "Allow",
              "Action": ["dynamodb:Query", "dynamodb:PutItem"],
              "Resource": provisioned.camera_tracks_table_arn}

    def logs(name: str) -> list[dict[str, Any]]:
        return [{"Sid": "CreateLogGroup", "Effect": "Allow", "Action": "logs:CreateLogGroup",
                 "Resource": f"arn:{p}:logs:{region}:{account}:*"},
                {"Sid": "WriteLogs", "Effect": "Allow",
                 "Action": ["logs:CreateLogStream", "logs:PutLogEvents"],
                 "Resource": f"arn:{p}:logs:{region}:{account}:log-group:/aws/lambda/{name}:*"}]

    def policy(name: str, *statements: dict[str, Any]) -> dict[str, Any]:
        return {"Version": "2012-10-17", "Statement": [*statements, *logs(name)]}

    return {
        spec.frame_function_name: policy(
            spec.frame_function_name,
            # the frames a GET names, and the web tier's images (it stores them in the input
            # bucket, as the course's image service did, and names them the same way)
            {"Sid": "ReadFramesAndWebImages", "Effect": "Allow", "Action": "s3:GetObject",
             "Resource": [frames, f"arn:{p}:s3:::{provisioned.input_bucket}/*"]},
            students, tracks),
        spec.detect_function_name: policy(
            spec.detect_function_name,
            {"Sid": "ReadFramesWriteCrops", "Effect": "Allow",
             "Action": ["s3:GetObject", "s3:PutObject"], "Resource": frames},
            {"Sid": "SendRequestsAndAnswers", "Effect": "Allow", "Action": "sqs:SendMessage",
             "Resource": [provisioned.request_queue_arn, provisioned.response_queue_arn]}),
        spec.recognize_function_name: policy(
            spec.recognize_function_name,
            {"Sid": "ConsumeRequests", "Effect": "Allow",
             "Action": ["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes",
                        "sqs:ChangeMessageVisibility"],
             "Resource": provisioned.request_queue_arn},
            {"Sid": "ReadCrops", "Effect": "Allow", "Action": "s3:GetObject",
             "Resource": frames},
            {"Sid": "SendAnswers", "Effect": "Allow", "Action": "sqs:SendMessage",
             "Resource": provisioned.response_queue_arn}, students, tracks),
    }


def provision_camera_functions(session: SessionLike, spec: ResourceSpec, image_uri: str,
                               gallery_path_in_image: str, provisioned: Provisioned, *,
                               extra_environment: Mapping[str, str] | None = None,
                               wait_s: float = 300.0) -> list[ProvisionedFunction]:
    """The three camera functions from the function image (AWS; the local cloud has its own)."""
    policies = camera_policies(spec, provisioned)
    return [ensure_image_function(session, name=name, image_uri=image_uri, command=command,
                                  role_name=f"{name}-role", policy=policies[name],
                                  timeout_s=spec.camera_function_timeout_s,
                                  memory_mb=spec.camera_function_memory_mb,
                                  environment=camera_environment(
                                      spec, provisioned, name, gallery_path_in_image,
                                      extra_environment),
                                  wait_s=wait_s)
            for name, command in spec.camera_functions().items()]


def provision_camera(session: SessionLike, spec: ResourceSpec,
                     provisioned: Provisioned) -> ProvisionedCamera:
    """URLs, their permission and the request queue's trigger, for functions that exist."""
    lam = session.client("lambda")
    changes: list[Change] = []
    urls = {}
    for name in (spec.frame_function_name, spec.detect_function_name):
        urls[name] = _ensure_url(lam, name, spec.url_auth_type, changes)
        _ensure_public_access(lam, name, spec.url_auth_type == "NONE", changes)
    mapping = _ensure_mapping(lam, spec, provisioned.request_queue_arn, changes)
    for change in changes:
        log.info("provisioned", kind=change.kind, name=change.name, action=change.action,
                 detail=change.detail)
    return ProvisionedCamera(frame_url=urls[spec.frame_function_name],
                             detect_url=urls[spec.detect_function_name],
                             auth_type=spec.url_auth_type,
                             response_queue_url=provisioned.response_queue_url,
                             request_queue_url=provisioned.request_queue_url,
                             frames_bucket=provisioned.frames_bucket,
                             mapping_uuid=mapping, changes=tuple(changes))


def _ensure_url(lam: Any, function: str, auth_type: str, changes: list[Change]) -> str:
    try:
        current = lam.get_function_url_config(FunctionName=function)
    except lam.exceptions.ResourceNotFoundException:
        created = lam.create_function_url_config(FunctionName=function, AuthType=auth_type)
        changes.append(Change("function url", function, "created", auth_type))
        return str(created["FunctionUrl"])
    if current["AuthType"] != auth_type:
        lam.update_function_url_config(FunctionName=function, AuthType=auth_type)
        changes.append(Change("function url", function, "updated",
                              f"AuthType {current['AuthType']} -> {auth_type}"))
    return str(current["FunctionUrl"])


def _public_statements() -> dict[str, dict[str, Any]]:
    """AddPermission's arguments for the two statements, by statement id."""
    return {PUBLIC_URL_SID: {"Action": "lambda:InvokeFunctionUrl", "Principal": "*",
                             "FunctionUrlAuthType": "NONE"},
            PUBLIC_INVOKE_SID: {"Action": "lambda:InvokeFunction", "Principal": "*",
                                "InvokedViaFunctionUrl": True}}


def _ensure_public_access(lam: Any, function: str, public: bool,
                          changes: list[Change]) -> None:
    """A NONE URL's function grants everyone the URL and the invoke through it; an AWS_IAM
    URL's does not (the statements are removed when the auth type goes back to AWS_IAM)."""
    try:
        policy = json.loads(lam.get_policy(FunctionName=function)["Policy"])
    except lam.exceptions.ResourceNotFoundException:
        policy = {"Statement": []}
    present = {s.get("Sid") for s in policy.get("Statement", [])}
    for sid, arguments in _public_statements().items():
        if public and sid not in present:
            lam.add_permission(FunctionName=function, StatementId=sid, **arguments)
            changes.append(Change("lambda permission", f"{function}/{sid}", "created",
                                  f"{arguments['Action']} for everyone: the URL is public"))
        elif not public and sid in present:
            lam.remove_permission(FunctionName=function, StatementId=sid)
            changes.append(Change("lambda permission", f"{function}/{sid}", "removed",
                                  "the URL is AWS_IAM"))


def _ensure_mapping(lam: Any, spec: ResourceSpec, queue_arn: str, changes: list[Change]) -> str:
    function = spec.recognize_function_name
    desired: dict[str, Any] = {
        "BatchSize": spec.request_batch_size,
        "MaximumBatchingWindowInSeconds": spec.request_batching_window_s,
        "FunctionResponseTypes": [REPORT_BATCH_ITEM_FAILURES],
        "ScalingConfig": ({"MaximumConcurrency": spec.request_max_concurrency}
                          if spec.request_max_concurrency else {}),
    }
    mappings = [m for m in lam.list_event_source_mappings(
        EventSourceArn=queue_arn, FunctionName=function)["EventSourceMappings"]
        if m.get("FunctionArn", "").split(":function:")[-1].split(":")[0] == function]
    if not mappings:
        created = lam.create_event_source_mapping(EventSourceArn=queue_arn, FunctionName=function,
                                                  Enabled=True, **desired)
        changes.append(Change("event source mapping", f"{spec.request_queue} -> {function}",
                              "created", f"batch {spec.request_batch_size}, "
                                         "ReportBatchItemFailures"))
        return str(created["UUID"])
    current = mappings[0]
    differing = {k: v for k, v in desired.items()
                 if (current.get(k) or ({} if k == "ScalingConfig" else [] if
                                        k == "FunctionResponseTypes" else 0)) != v}
    if current.get("State") in ("Disabled", "Disabling"):
        differing["Enabled"] = True
    if differing:
        lam.update_event_source_mapping(UUID=current["UUID"], **differing)
        changes.append(Change("event source mapping", f"{spec.request_queue} -> {function}",
                              "updated", ", ".join(sorted(differing))))
    return str(current["UUID"])
