"""Small Lambda handlers the endpoint tests invoke by name (`tests.lambda_service.handlers:echo`)."""

from __future__ import annotations

import os
import time
from typing import Any

_held: list[bytes] = []  # module scope, so the allocation outlives the statement that made it
#: when this worker imported the module (a warm worker did so before its first request)
IMPORTED_AT = time.time()


def echo(event: Any, context: Any) -> dict[str, Any]:
    """Return the event and what the context says about this invocation."""
    return {"event": event, "pid": os.getpid(), "request_id": context.aws_request_id,
            "function_name": context.function_name, "version": context.function_version,
            "arn": context.invoked_function_arn, "memory": context.memory_limit_in_mb,
            "remaining_ms": context.get_remaining_time_in_millis(),
            "log_group": context.log_group_name, "log_stream": context.log_stream_name}


def noop(event: Any, context: Any) -> None:
    return None


def fail(event: Any, context: Any) -> None:
    print("about to fail")
    raise ValueError(f"bad input: {event.get('why', 'no reason')}")


def sleep(event: Any, context: Any) -> dict[str, Any]:
    time.sleep(float(event.get("seconds", 1.0)))
    return {"slept": event.get("seconds", 1.0), "pid": os.getpid()}


def allocate(event: Any, context: Any) -> dict[str, int]:
    """Touch `mb` megabytes (filled, so the pages are resident) and hold them for `hold_s`."""
    _held.append(b"\x01" * (int(event["mb"]) * 1024 * 1024))
    time.sleep(float(event.get("hold_s", 0.5)))
    _held.clear()
    return {"pid": os.getpid()}


def environment(event: Any, context: Any) -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k in event.get("names", [])}


def unserializable(event: Any, context: Any) -> object:
    return object()


_calls = 0


def count(event: Any, context: Any) -> dict[str, int]:
    """How many times this worker ran the handler: > 1 proves the import happened once."""
    global _calls
    _calls += 1
    return {"calls": _calls, "pid": os.getpid(), "imported_at": IMPORTED_AT}


def big_response(event: Any, context: Any) -> dict[str, str]:
    """A response of exactly ``bytes`` + 12 bytes of JSON (``{"data": "xx…"}``)."""
    return {"data": "x" * int(event["bytes"])}


def exit_or_pid(event: Any, context: Any) -> dict[str, int]:
    """Exit the worker process with ``exit`` as its status (a crash), else return the pid."""
    if "exit" in event:
        os._exit(int(event["exit"]))
    return {"pid": os.getpid()}


def hold_then_mark(event: Any, context: Any) -> dict[str, Any]:
    """Hold the worker until the file ``go`` exists (when given), then write the time to the
    file ``mark`` (when given): evidence of when, and whether, an invocation ran."""
    from pathlib import Path

    if "go" in event:
        while not Path(event["go"]).exists() and context.get_remaining_time_in_millis() > 100:
            time.sleep(0.01)
    ended = time.time()
    if "mark" in event:
        Path(event["mark"]).write_text(repr(ended), encoding="utf-8")
    return {"ended_at": ended, "pid": os.getpid()}


def write_file(event: Any, context: Any) -> None:
    """Leave evidence that an asynchronous (Event) invocation ran."""
    from pathlib import Path

    Path(event["path"]).write_text(context.aws_request_id, encoding="utf-8")


def pipeline(event: Any, context: Any) -> dict[str, Any]:
    """A stand-in for the recognition function that does its AWS part against the local cloud:
    read the uploaded object, look a student up, write `<stem>.csv`, send the result message."""
    import json
    from urllib.parse import unquote_plus

    import boto3

    results = []
    for record in event["Records"]:
        bucket = record["s3"]["bucket"]["name"]
        key = unquote_plus(record["s3"]["object"]["key"])
        size = len(boto3.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read())
        item = boto3.client("dynamodb").get_item(TableName=os.environ["STUDENTS_TABLE"],
                                                 Key={"name": {"S": "mr_bean"}})["Item"]
        csv = f"mr_bean,{item['major']['S']},{item['year']['S']}\n"
        out_key = key.rsplit(".", 1)[0] + ".csv"
        boto3.client("s3").put_object(Bucket=os.environ["OUTPUT_BUCKET"], Key=out_key,
                                      Body=csv.encode())
        result = {"request_id": context.aws_request_id, "bucket": bucket, "key": key,
                  "size": size, "csv": csv, "gallery": os.environ["GALLERY_PATH"],
                  "output": {"bucket": os.environ["OUTPUT_BUCKET"], "key": out_key}}
        boto3.client("sqs").send_message(QueueUrl=os.environ["OUTPUT_QUEUE_URL"],
                                         MessageBody=json.dumps(result))
        results.append(result)
    return {"results": results}


def url_echo(event: Any, context: Any) -> dict[str, Any]:
    """A Function URL handler that returns its event (no statusCode: Lambda answers 200 JSON)."""
    return {"event": event, "request_id": context.aws_request_id}


def url_custom(event: Any, context: Any) -> Any:
    """Answers with what the POSTed JSON asks for: `{"return": <value>}` is returned as is."""
    import json

    return json.loads(event["body"])["return"]


def sqs_batch(event: Any, context: Any) -> dict[str, Any]:
    """An SQS-triggered handler that leaves evidence: one JSON line per record it saw, appended to
    `<SQS_EVIDENCE_DIR>/<body's "id">` (the record, the batch's size, when it ran). A body's
    `"fail": N` reports the record in batchItemFailures on its first N deliveries (`-1`: always);
    `"crash": N` raises on them (the whole batch fails); `"sleep": S` holds the worker S
    seconds; `"bad_report": true` names a message id that is not in the batch."""
    import json
    from pathlib import Path

    evidence = Path(os.environ["SQS_EVIDENCE_DIR"])
    failures = []
    records = event["Records"]
    crash = None
    for record in records:
        body = json.loads(record["body"])
        started = time.time()
        time.sleep(float(body.get("sleep", 0)))
        path = evidence / str(body["id"])
        with path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps({"batch": len(records), "started": started,
                                     "ended": time.time(), "pid": os.getpid(),
                                     "record": record}) + "\n")
        seen = len(path.read_text(encoding="utf-8").splitlines())
        if body.get("crash") and (body["crash"] < 0 or seen <= body["crash"]):
            crash = f"crash on {body['id']}"
        if body.get("fail") and (body["fail"] < 0 or seen <= body["fail"]):
            failures.append({"itemIdentifier": record["messageId"]})
        if body.get("bad_report"):
            failures.append({"itemIdentifier": "not-a-message-of-this-batch"})
    if crash:
        raise RuntimeError(crash)
    return {"batchItemFailures": failures}


def crash(event: Any, context: Any) -> None:
    """The runtime process dies mid-invocation (as a segfaulting native library would)."""
    os._exit(3)


def flaky(event: Any, context: Any) -> dict[str, Any]:
    """Record each attempt (request id, time) in ``dir/id``, then fail while the attempts so far
    are at most ``fail_times`` (``-1``: always): Lambda's retries of Event invocations, observed."""
    import json
    from pathlib import Path

    path = Path(event["dir"]) / event["id"]
    with path.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps({"request_id": context.aws_request_id, "at": time.time()}) + "\n")
    if "sleep" in event:
        time.sleep(float(event["sleep"]))
    attempts = len(path.read_text(encoding="utf-8").splitlines())
    fail_times = int(event.get("fail_times", 0))
    if fail_times < 0 or attempts <= fail_times:
        raise RuntimeError(f"attempt {attempts} fails on purpose")
    return {"attempts": attempts, "id": event["id"]}


def save_event(event: Any, context: Any) -> None:
    """Write the event as the function got it to ``$EVIDENCE_DIR/<request id>.json``."""
    import json
    from pathlib import Path

    path = Path(os.environ["EVIDENCE_DIR"]) / f"{context.aws_request_id}.json"
    path.write_text(json.dumps(event), encoding="utf-8")
