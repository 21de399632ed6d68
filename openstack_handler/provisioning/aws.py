"""Apply the one :class:`~openstack_handler.provisioning.spec.ResourceSpec` idempotently with boto3.

Used by the local cloud (against moto) and by `openstack-handler aws provision` (against AWS), so
both run the same buckets, queues, redrive policies, notification and table. Every `ensure` step
reads first and writes only what differs; the returned changes list is empty on a second run.
The Lambda side of the camera path (URLs, permissions, the queue trigger) is applied by
:mod:`openstack_handler.provisioning.camera` from the same spec.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import structlog
from botocore.exceptions import ClientError
from tenacity import retry, retry_if_exception, stop_after_delay, wait_exponential

from openstack_handler.provisioning.spec import (
    CROPS_LIFECYCLE_ID,
    DEFAULT_COMMAND,
    FUNCTION_NOTIFICATION_ID,
    NOTIFICATION_ID,
    OBJECT_CREATED,
    ROLE_POLICY_NAME,
    Change,
    Provisioned,
    ProvisionedFunction,
    ProvisioningError,
    ResourceSpec,
    SessionLike,
)

log = structlog.get_logger()

_MISSING_QUEUE = {"AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist"}
_MISSING_BUCKET = {"404", "NoSuchBucket", "NotFound"}


# -- the resources ----------------------------------------------------------------------------
def provision(session: SessionLike, spec: ResourceSpec) -> Provisioned:
    """Converge buckets, queues (+DLQs, redrive, policy), notification and table to *spec*."""
    changes: list[Change] = []
    sqs, s3 = session.client("sqs"), session.client("s3")
    region = sqs.meta.region_name
    account, partition = _identity(session)

    def queue_arn(name: str) -> str:
        return f"arn:{partition}:sqs:{region}:{account}:{name}"

    def redrive(dlq: str) -> str:
        return json.dumps({"deadLetterTargetArn": queue_arn(dlq),
                           "maxReceiveCount": spec.max_receive_count})

    base = {"ReceiveMessageWaitTimeSeconds": str(spec.receive_wait_s),
            "MessageRetentionPeriod": str(spec.message_retention_s)}
    dlq = {"MessageRetentionPeriod": str(spec.dlq_retention_s)}
    input_bucket_arn = f"arn:{partition}:s3:::{spec.input_bucket}"
    queues = {
        spec.input_dlq: dlq,
        spec.output_dlq: dlq,
        spec.request_dlq: dlq,
        spec.response_dlq: dlq,
        spec.input_queue: {**base, "VisibilityTimeout": str(spec.visibility_timeout_s),
                           "RedrivePolicy": redrive(spec.input_dlq),
                           "Policy": json.dumps(input_queue_policy(
                               queue_arn(spec.input_queue), input_bucket_arn, account))},
        spec.output_queue: {**base, "VisibilityTimeout": "60",
                            "RedrivePolicy": redrive(spec.output_dlq)},
        spec.response_queue: {**base, "VisibilityTimeout": "30",
                              "MessageRetentionPeriod": str(spec.response_retention_s),
                              "RedrivePolicy": json.dumps({
                                  "deadLetterTargetArn": queue_arn(spec.response_dlq),
                                  "maxReceiveCount": spec.response_max_receive_count})},
        spec.request_queue: {**base, "VisibilityTimeout": str(spec.request_visibility_timeout_s),
                             "RedrivePolicy": redrive(spec.request_dlq)},
    }
    if spec.mode == "serverless":
        queues[spec.failure_queue] = dlq
    urls = {name: _ensure_queue(sqs, name, attributes, changes)
            for name, attributes in queues.items()}  # DLQs first: redrive targets must exist
    for bucket in (spec.input_bucket, spec.output_bucket, spec.frames_bucket):
        _ensure_bucket(s3, bucket, region, changes)
    if spec.mode == "daemon":  # serverless: after the function exists (serverless_provisioning)
        ensure_input_trigger(s3, spec.input_bucket, changes, queue_arn=queue_arn(spec.input_queue))
    _ensure_crops_expire(s3, spec.frames_bucket, spec.crops_expire_days, changes)
    ddb = session.client("dynamodb")
    table_arn = _ensure_table(ddb, spec.students_table, {"name": "S"}, changes)
    tracks_arn = _ensure_table(ddb, spec.camera_tracks_table,
                               {"camera_id": "S", "sequence": "N"}, changes,
                               ttl_attribute="expires_at")
    for change in changes:
        log.info("provisioned", kind=change.kind, name=change.name, action=change.action,
                 detail=change.detail)
    return Provisioned(
        input_bucket=spec.input_bucket, output_bucket=spec.output_bucket,
        input_queue_url=urls[spec.input_queue], input_queue_arn=queue_arn(spec.input_queue),
        input_dlq_url=urls[spec.input_dlq], input_dlq_arn=queue_arn(spec.input_dlq),
        output_queue_url=urls[spec.output_queue], output_queue_arn=queue_arn(spec.output_queue),
        output_dlq_url=urls[spec.output_dlq], output_dlq_arn=queue_arn(spec.output_dlq),
        response_queue_url=urls[spec.response_queue],
        response_queue_arn=queue_arn(spec.response_queue),
        students_table=spec.students_table, students_table_arn=table_arn,
        camera_tracks_table=spec.camera_tracks_table, camera_tracks_table_arn=tracks_arn,
        frames_bucket=spec.frames_bucket,
        request_queue_url=urls[spec.request_queue], request_queue_arn=queue_arn(spec.request_queue),
        request_dlq_url=urls[spec.request_dlq], request_dlq_arn=queue_arn(spec.request_dlq),
        response_dlq_url=urls[spec.response_dlq], response_dlq_arn=queue_arn(spec.response_dlq),
        failure_queue_url=urls.get(spec.failure_queue, ""),
        failure_queue_arn=queue_arn(spec.failure_queue) if spec.failure_queue in urls else "",
        account_id=account, region=region, partition=partition, changes=tuple(changes))


def input_queue_policy(queue_arn: str, bucket_arn: str, account_id: str) -> dict[str, Any]:
    """Let S3 deliver the input bucket's notifications, and nobody else (confused deputy)."""
    return {"Version": "2012-10-17", "Statement": [{
        "Sid": "AllowInputBucketNotifications", "Effect": "Allow",
        "Principal": {"Service": "s3.amazonaws.com"}, "Action": "sqs:SendMessage",
        "Resource": queue_arn,
        "Condition": {"ArnLike": {"aws:SourceArn": bucket_arn},
                      "StringEquals": {"aws:SourceAccount": account_id}}}]}


def _identity(session: SessionLike) -> tuple[str, str]:
    identity = session.client("sts").get_caller_identity()
    return identity["Account"], identity["Arn"].split(":")[1]


def _error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _ensure_queue(sqs: Any, name: str, attributes: Mapping[str, str],
                  changes: list[Change]) -> str:
    try:
        url = sqs.get_queue_url(QueueName=name)["QueueUrl"]
    except ClientError as exc:
        if _error_code(exc) not in _MISSING_QUEUE:
            raise
        url = sqs.create_queue(QueueName=name, Attributes=dict(attributes))["QueueUrl"]
        changes.append(Change("sqs queue", name, "created"))
        return str(url)
    current = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    differing = {k: v for k, v in attributes.items() if not _same_attribute(current.get(k), v)}
    if differing:  # send them all: moto drops a Policy that a SetQueueAttributes call omits
        sqs.set_queue_attributes(QueueUrl=url, Attributes=dict(attributes))
        changes.append(Change("sqs queue", name, "updated", ", ".join(sorted(differing))))
    return str(url)


def _same_attribute(current: str | None, desired: str) -> bool:
    """SQS echoes JSON attributes (policies) with its own spacing and number types."""
    if current is None:
        return False
    if desired.startswith("{"):
        try:
            return _canonical(json.loads(current)) == _canonical(json.loads(desired))
        except json.JSONDecodeError:
            return False
    return current == desired


def _canonical(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _canonical(v) for k, v in value.items()}
    if isinstance(value, list):
        items = [_canonical(v) for v in value]
        return items[0] if len(items) == 1 else items  # IAM treats ["x"] and "x" alike
    return str(value)


def _ensure_bucket(s3: Any, name: str, region: str, changes: list[Change]) -> None:
    try:
        s3.head_bucket(Bucket=name)
        return
    except ClientError as exc:
        if _error_code(exc) not in _MISSING_BUCKET:
            raise ProvisioningError(f"bucket {name} exists but is not accessible to us "
                                    f"({_error_code(exc)}): pick another prefix") from exc
    kwargs: dict[str, Any] = {}
    if region != "us-east-1":
        kwargs["CreateBucketConfiguration"] = {"LocationConstraint": region}
    try:
        s3.create_bucket(Bucket=name, **kwargs)
    except ClientError as exc:
        if _error_code(exc) != "BucketAlreadyOwnedByYou":  # a concurrent run created it
            raise
        return
    changes.append(Change("s3 bucket", name, "created"))


def _filter_rules(entry: Mapping[str, Any]) -> dict[str, str]:
    rules = entry.get("Filter", {}).get("Key", {}).get("FilterRules", [])
    return {str(r["Name"]).lower(): str(r["Value"]) for r in rules}


def _is_object_created(entry: Mapping[str, Any]) -> bool:
    return any(e == OBJECT_CREATED or e.startswith("s3:ObjectCreated:")
               for e in entry.get("Events", []))


def _function_name(arn: str) -> str:
    return arn.split(":function:")[-1].split(":")[0]


def ensure_input_trigger(s3: Any, bucket: str, changes: list[Change], *, queue_arn: str = "",
                         function_arn: str = "", prefix: str = "", suffix: str = "") -> None:
    """The input bucket's one trigger: our ObjectCreated entry to the input queue (daemon mode,
    *queue_arn*) or to the function (serverless, *function_arn*), written with one
    PutBucketNotificationConfiguration that also drops our entry of the other kind, so a switch
    never leaves both (every video would run twice) nor a moment with neither. Entries that are
    not ours are kept, except that one which already sends new objects to where the other mode
    sends them is refused (ProvisioningError): it would run every video twice."""
    if bool(queue_arn) == bool(function_arn):
        raise ValueError("give the input queue's ARN or the function's, not both")
    current = s3.get_bucket_notification_configuration(Bucket=bucket)
    queues = current.get("QueueConfigurations", [])
    functions = current.get("LambdaFunctionConfigurations", [])
    foreign_queues = [c for c in queues if c.get("Id") != NOTIFICATION_ID]
    foreign_functions = [c for c in functions if c.get("Id") != FUNCTION_NOTIFICATION_ID]
    if queue_arn:
        desired: dict[str, Any] = {"Id": NOTIFICATION_ID, "QueueArn": queue_arn,
                                   "Events": [OBJECT_CREATED]}
        ours, kind, target = [c for c in queues if c.get("Id") == NOTIFICATION_ID], \
            "QueueConfigurations", f"ObjectCreated -> {queue_arn}"
        stale = [c for c in functions if c.get("Id") == FUNCTION_NOTIFICATION_ID]
        clashing = [c for c in foreign_functions if _is_object_created(c)]
    else:
        desired = {"Id": FUNCTION_NOTIFICATION_ID, "LambdaFunctionArn": function_arn,
                   "Events": [OBJECT_CREATED]}
        rules = [{"Name": n, "Value": v} for n, v in (("prefix", prefix), ("suffix", suffix))
                 if v]
        if rules:
            desired["Filter"] = {"Key": {"FilterRules": rules}}
        ours, kind, target = ([c for c in functions if c.get("Id") == FUNCTION_NOTIFICATION_ID],
                              "LambdaFunctionConfigurations",
                              f"ObjectCreated -> {function_arn}")
        stale = [c for c in queues if c.get("Id") == NOTIFICATION_ID]
        clashing = [c for c in foreign_queues if _is_object_created(c)]
    if clashing:
        ids = ", ".join(str(c.get("Id", "?")) for c in clashing)
        raise ProvisioningError(
            f"bucket {bucket} already sends new objects elsewhere ({kind.replace('Configurations', '')} "
            f"entries not ours: {ids}); with the {'queue' if queue_arn else 'function'} trigger "
            "as well every video would run twice: remove them first")
    target_key = "QueueArn" if queue_arn else "LambdaFunctionArn"
    if (len(ours) == 1 and not stale and ours[0].get(target_key) == desired[target_key]
            and ours[0].get("Events") == desired["Events"]
            and _filter_rules(ours[0]) == _filter_rules(desired)):
        return
    config = {k: v for k, v in current.items()
              if k in ("TopicConfigurations", "EventBridgeConfiguration")}
    config["QueueConfigurations"] = foreign_queues + ([desired] if queue_arn else [])
    config["LambdaFunctionConfigurations"] = foreign_functions + ([] if queue_arn else [desired])
    s3.put_bucket_notification_configuration(Bucket=bucket, NotificationConfiguration=config)
    detail = target + (" (replacing the " + ("function" if queue_arn else "queue")
                       + " trigger)" if stale else "")
    changes.append(Change("s3 notification", bucket, "created" if not ours else "updated",
                          detail))


def _ensure_crops_expire(s3: Any, bucket: str, days: int, changes: list[Change]) -> None:
    """Spilled face crops (`crops/`) expire; other lifecycle rules on the bucket are kept."""
    try:
        rules = s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
    except ClientError as exc:
        if _error_code(exc) != "NoSuchLifecycleConfiguration":
            raise
        rules = []
    desired = {"ID": CROPS_LIFECYCLE_ID, "Filter": {"Prefix": "crops/"}, "Status": "Enabled",
               "Expiration": {"Days": days}}
    ours = [r for r in rules if r.get("ID") == CROPS_LIFECYCLE_ID]
    if (len(ours) == 1 and ours[0].get("Status") == "Enabled"
            and ours[0].get("Expiration", {}).get("Days") == days
            and ours[0].get("Filter", {}).get("Prefix") == "crops/"):
        return
    others = [r for r in rules if r.get("ID") != CROPS_LIFECYCLE_ID]
    s3.put_bucket_lifecycle_configuration(Bucket=bucket, LifecycleConfiguration={
        "Rules": [*others, desired]})
    changes.append(Change("s3 lifecycle", bucket, "created" if not ours else "updated",
                          f"crops/ expire after {days} day(s)"))


def _ensure_table(ddb: Any, name: str, keys: Mapping[str, str], changes: list[Change], *,
                  ttl_attribute: str | None = None) -> str:
    """An on-demand table with *keys* (attribute → type: the partition key first, then the
    sort key) and, given *ttl_attribute*, DynamoDB's TTL on it."""
    key_schema = [{"AttributeName": attribute, "KeyType": kind}
                  for attribute, kind in zip(keys, ("HASH", "RANGE"), strict=False)]
    try:
        table = ddb.describe_table(TableName=name)["Table"]
    except ddb.exceptions.ResourceNotFoundException:
        table = ddb.create_table(
            TableName=name, KeySchema=key_schema, BillingMode="PAY_PER_REQUEST",
            AttributeDefinitions=[{"AttributeName": a, "AttributeType": t}
                                  for a, t in keys.items()],
        )["TableDescription"]
        ddb.get_waiter("table_exists").wait(TableName=name,
                                            WaiterConfig={"Delay": 1, "MaxAttempts": 120})
        changes.append(Change("dynamodb table", name, "created"))
    else:
        if table["KeySchema"] != key_schema:
            wanted = ", ".join(f"{a} ({t})" for a, t in keys.items())
            raise ProvisioningError(f"table {name} has key schema {table['KeySchema']}, "
                                    f"expected {wanted}; it cannot be changed")
        billing = table.get("BillingModeSummary", {}).get("BillingMode", "PROVISIONED")
        if billing != "PAY_PER_REQUEST":
            ddb.update_table(TableName=name, BillingMode="PAY_PER_REQUEST")
            changes.append(Change("dynamodb table", name, "updated", "BillingMode"))
    if ttl_attribute is not None:
        _ensure_ttl(ddb, name, ttl_attribute, changes)
    return str(table["TableArn"])


def _ensure_ttl(ddb: Any, table: str, attribute: str, changes: list[Change]) -> None:
    ttl = ddb.describe_time_to_live(TableName=table).get("TimeToLiveDescription", {})
    if ttl.get("TimeToLiveStatus") in ("ENABLED", "ENABLING") and \
            ttl.get("AttributeName") == attribute:
        return
    ddb.update_time_to_live(TableName=table, TimeToLiveSpecification={
        "Enabled": True, "AttributeName": attribute})
    changes.append(Change("dynamodb ttl", table, "updated", f"items expire at {attribute}"))


# -- the students table ------------------------------------------------------------------------
def load_student_records(path: Path) -> list[dict[str, Any]]:
    """The course's `student_data.json`: a list of {"id", "name", "major", "year"}."""
    records = json.loads(path.read_text(encoding="utf-8"), parse_float=Decimal)
    if not isinstance(records, list) or not all(
            isinstance(r, dict) and isinstance(r.get("name"), str) and r["name"] for r in records):
        raise ValueError(f"{path}: expected a JSON list of objects with a non-empty 'name'")
    return records


def seed_students(session: SessionLike, table: str,
                  records: Iterable[Mapping[str, Any]]) -> int:
    """Converge the table to *records* (keyed by name; a later duplicate wins): put only the
    records that are missing or differ, so a second run writes nothing. Returns how many it put."""
    wanted = {str(r["name"]): {k: _dynamo_value(v) for k, v in r.items()} for r in records}
    handle = session.resource("dynamodb").Table(table)
    current = {str(item["name"]): item for item in _scan_all(handle)}
    stale = [item for name, item in wanted.items() if current.get(name) != item]
    with handle.batch_writer(overwrite_by_pkeys=["name"]) as batch:
        for item in stale:
            batch.put_item(Item=item)
    log.info("students_seeded", table=table, records=len(wanted), written=len(stale))
    return len(stale)


def _scan_all(table: Any) -> Iterator[dict[str, Any]]:
    kwargs: dict[str, Any] = {}
    while True:
        page = table.scan(**kwargs)
        yield from page.get("Items", [])
        if "LastEvaluatedKey" not in page:
            return
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def _dynamo_value(value: Any) -> Any:
    return Decimal(str(value)) if isinstance(value, float) else value


# -- the function (real AWS: a container image in ECR) -----------------------------------------
def function_environment(spec: ResourceSpec, provisioned: Provisioned, gallery_path: str,
                         extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The function's configuration variables (docs/contracts.md)."""
    return {"GALLERY_PATH": gallery_path, "STUDENTS_TABLE": provisioned.students_table,
            "OUTPUT_BUCKET": provisioned.output_bucket,
            "OUTPUT_QUEUE_URL": provisioned.output_queue_url,
            "RESPONSE_QUEUE_URL": provisioned.response_queue_url, **(extra or {})}


def lambda_trust_policy() -> dict[str, Any]:
    return {"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"},
        "Action": "sts:AssumeRole"}]}


def function_policy(spec: ResourceSpec, provisioned: Provisioned) -> dict[str, Any]:
    """Least privilege: read input objects, write output objects, send results, read students."""
    p, region, account = provisioned.partition, provisioned.region, provisioned.account_id
    return {"Version": "2012-10-17", "Statement": [
        {"Sid": "ReadInputObjects", "Effect": "Allow",
         "Action": ["s3:GetObject", "s3:GetObjectVersion"],
         "Resource": f"arn:{p}:s3:::{provisioned.input_bucket}/*"},
        {"Sid": "WriteOutputObjects", "Effect": "Allow", "Action": "s3:PutObject",
         "Resource": f"arn:{p}:s3:::{provisioned.output_bucket}/*"},
        {"Sid": "SendResults", "Effect": "Allow", "Action": "sqs:SendMessage",
         "Resource": [provisioned.output_queue_arn, provisioned.response_queue_arn]
         # serverless: Lambda sends a failed event to its destination with this role
         + ([provisioned.failure_queue_arn] if provisioned.failure_queue_arn else [])},
        {"Sid": "ReadStudents", "Effect": "Allow",
         "Action": ["dynamodb:GetItem", "dynamodb:BatchGetItem"],
         "Resource": provisioned.students_table_arn},
        {"Sid": "CreateLogGroup", "Effect": "Allow", "Action": "logs:CreateLogGroup",
         "Resource": f"arn:{p}:logs:{region}:{account}:*"},
        {"Sid": "WriteLogs", "Effect": "Allow",
         "Action": ["logs:CreateLogStream", "logs:PutLogEvents"],
         "Resource": f"arn:{p}:logs:{region}:{account}:log-group:/aws/lambda/"
                     f"{spec.function_name}:*"},
    ]}


def provision_function(session: SessionLike, spec: ResourceSpec, image_uri: str,
                       gallery_path_in_image: str, *, provisioned: Provisioned | None = None,
                       command: str = DEFAULT_COMMAND, role_name: str = "",
                       extra_environment: Mapping[str, str] | None = None,
                       wait_s: float = 300.0) -> ProvisionedFunction:
    """Role + inline policy, then create or update the image function and wait until Active.

    For real AWS (moto stores the function but cannot run it). *provisioned* defaults to a fresh
    (idempotent) `provision()` run, which supplies the queue URLs and ARNs.
    """
    provisioned = provisioned or provision(session, spec)
    return ensure_image_function(
        session, name=spec.function_name, image_uri=image_uri, command=command,
        role_name=role_name or f"{spec.function_name}-role",
        policy=function_policy(spec, provisioned), timeout_s=spec.function_timeout_s,
        memory_mb=spec.function_memory_mb,
        environment=function_environment(spec, provisioned, gallery_path_in_image,
                                         extra_environment),
        wait_s=wait_s)


def ensure_image_function(session: SessionLike, *, name: str, image_uri: str, command: str,
                          role_name: str, policy: Mapping[str, Any], timeout_s: int,
                          memory_mb: int, environment: Mapping[str, str],
                          wait_s: float = 300.0) -> ProvisionedFunction:
    """One image function (CMD *command*) and its role with *policy*: created, or converged to
    what is given, then waited for until Active."""
    changes: list[Change] = []
    role_arn = _ensure_role(session.client("iam"), role_name, policy, changes)
    lam = session.client("lambda")
    desired = {
        "Role": role_arn, "Timeout": timeout_s, "MemorySize": memory_mb,
        "Environment": {"Variables": dict(environment)},
        "ImageConfig": {"Command": [command]},
    }
    waiter_config = {"Delay": 2, "MaxAttempts": max(1, int(wait_s / 2))}
    try:
        current = lam.get_function(FunctionName=name)
    except lam.exceptions.ResourceNotFoundException:
        created = _create_function(lam, name, image_uri, desired, wait_s)
        changes.append(Change("lambda function", name, "created", image_uri))
        function_arn = str(created["FunctionArn"])
    else:
        function_arn = str(current["Configuration"]["FunctionArn"])
        if current.get("Code", {}).get("ImageUri") != image_uri:
            lam.update_function_code(FunctionName=name, ImageUri=image_uri)
            lam.get_waiter("function_updated_v2").wait(FunctionName=name,
                                                       WaiterConfig=waiter_config)
            changes.append(Change("lambda function", name, "updated", image_uri))
        differing = function_config_diff(current["Configuration"], desired)
        if differing:
            lam.update_function_configuration(FunctionName=name,
                                              **{k: desired[k] for k in differing})
            lam.get_waiter("function_updated_v2").wait(FunctionName=name,
                                                       WaiterConfig=waiter_config)
            changes.append(Change("lambda function", name, "updated", ", ".join(differing)))
    lam.get_waiter("function_active_v2").wait(FunctionName=name, WaiterConfig=waiter_config)
    for change in changes:
        log.info("provisioned", kind=change.kind, name=change.name, action=change.action,
                 detail=change.detail)
    return ProvisionedFunction(function_arn=function_arn, role_arn=role_arn,
                               changes=tuple(changes))


def _ensure_role(iam: Any, name: str, policy: Mapping[str, Any], changes: list[Change]) -> str:
    trust = lambda_trust_policy()
    try:
        role = iam.get_role(RoleName=name)["Role"]
    except iam.exceptions.NoSuchEntityException:
        role = iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(trust),
                               Description="face-recognition function (openstack-handler)")["Role"]
        changes.append(Change("iam role", name, "created"))
    else:
        if _canonical(_policy_dict(role.get("AssumeRolePolicyDocument"))) != _canonical(trust):
            iam.update_assume_role_policy(RoleName=name, PolicyDocument=json.dumps(trust))
            changes.append(Change("iam role", name, "updated", "trust policy"))
    try:
        current = iam.get_role_policy(RoleName=name, PolicyName=ROLE_POLICY_NAME)["PolicyDocument"]
    except iam.exceptions.NoSuchEntityException:
        current = None
    if current is None or _canonical(_policy_dict(current)) != _canonical(dict(policy)):
        iam.put_role_policy(RoleName=name, PolicyName=ROLE_POLICY_NAME,
                            PolicyDocument=json.dumps(policy))
        changes.append(Change("iam role policy", f"{name}/{ROLE_POLICY_NAME}",
                              "created" if current is None else "updated"))
    return str(role["Arn"])


def _policy_dict(document: Any) -> Any:
    """IAM documents come back decoded by boto3, but some endpoints return URL-encoded text."""
    if isinstance(document, str):
        return json.loads(unquote(document))
    return document


def _is_role_not_ready(exc: BaseException) -> bool:
    """IAM is eventually consistent: a new role can be refused by Lambda for a few seconds."""
    return (isinstance(exc, ClientError) and _error_code(exc) == "InvalidParameterValueException"
            and "role" in str(exc).lower())


def _create_function(lam: Any, name: str, image_uri: str, desired: Mapping[str, Any],
                     wait_s: float) -> dict[str, Any]:
    @retry(retry=retry_if_exception(_is_role_not_ready), stop=stop_after_delay(min(wait_s, 60)),
           wait=wait_exponential(multiplier=1, max=8), reraise=True)
    def create() -> dict[str, Any]:
        return dict(lam.create_function(FunctionName=name, PackageType="Image",
                                        Code={"ImageUri": image_uri}, Publish=False,
                                        **desired))

    return create()


def function_config_diff(current: Mapping[str, Any], desired: Mapping[str, Any]) -> list[str]:
    """The keys of *desired* (UpdateFunctionConfiguration's) that the function's *current*
    configuration does not have; Environment and ImageConfig compared as Lambda answers them."""
    differing = [k for k in ("Role", "Timeout", "MemorySize", "Handler", "Runtime")
                 if k in desired and current.get(k) != desired[k]]
    if current.get("Environment", {}).get("Variables", {}) != desired["Environment"]["Variables"]:
        differing.append("Environment")
    if "ImageConfig" in desired and current.get("ImageConfigResponse", {}).get(
            "ImageConfig", {}).get("Command") != desired["ImageConfig"]["Command"]:
        differing.append("ImageConfig")
    return differing


def describe_changes(changes: Sequence[Change]) -> str:
    """One line per change, or "unchanged" (what a CLI prints)."""
    return "\n".join(str(c) for c in changes) if changes else "unchanged"
