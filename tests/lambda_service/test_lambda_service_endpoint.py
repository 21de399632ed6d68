"""The local Lambda endpoint over real HTTP, driven by boto3's lambda client."""

from __future__ import annotations

import base64
import json
import math
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from lambda_service_helpers import lambda_client
from polling import wait_for

from lambda_service.endpoint import LambdaEndpoint
from lambda_service.spec import EndpointSpec, FunctionSpec

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
H = "tests.lambda_service.handlers"


def _fn(name: str, handler: str, **kw: Any) -> FunctionSpec:
    kw.setdefault("memory_mb", 256)
    kw.setdefault("concurrency", 1)
    kw.setdefault("timeout_s", 5)
    return FunctionSpec(name=name, handler=f"{H}:{handler}", **kw)


SPEC = EndpointSpec(functions=(
    _fn("echo", "echo", concurrency=2, environment={"GREETING": "hello"}),
    _fn("env", "environment", environment={"GREETING": "hello", "NUMBER": "7"}),
    _fn("fail", "fail"),
    _fn("count", "count"),
    _fn("sleepy", "sleep", timeout_s=1),
    _fn("busy", "sleep"),
    _fn("hungry", "allocate", memory_mb=100),
    _fn("writer", "write_file"),
    _fn("marshal", "unserializable"),
    _fn("sink", "noop"),
    _fn("report", "noop"),
    _fn("big", "big_response"),
    _fn("crashy", "exit_or_pid"),
    _fn("single", "hold_then_mark", timeout_s=30),
    FunctionSpec(name="broken", handler="tests.lambda_service.no_such_module:handler"),
))


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LambdaEndpoint]:
    log = tmp_path_factory.mktemp("lambda") / "endpoint.log"
    with LambdaEndpoint(SPEC, log_path=log, pythonpath=[REPO], cwd=REPO) as server:
        yield server


@pytest.fixture(scope="module")
def lam(endpoint: LambdaEndpoint) -> Any:
    return lambda_client(endpoint.url, read_timeout=30)


def _invoke(lam: Any, name: str, event: Any = None, **kw: Any) -> tuple[dict[str, Any], Any]:
    response = lam.invoke(FunctionName=name, Payload=json.dumps(event or {}).encode(), **kw)
    body = response["Payload"].read()
    return response, json.loads(body) if body else None


def test_request_response_returns_payload_and_context(lam: Any) -> None:
    response, body = _invoke(lam, "echo", {"hello": "world"})
    assert response["StatusCode"] == 200
    assert response["ExecutedVersion"] == "$LATEST"
    assert "FunctionError" not in response
    assert body["event"] == {"hello": "world"}
    assert body["function_name"] == "echo" and body["version"] == "$LATEST"
    assert body["arn"] == "arn:aws:lambda:us-east-1:123456789012:function:echo"
    assert body["memory"] == 256
    assert 0 < body["remaining_ms"] <= 5000
    assert body["log_group"] == "/aws/lambda/echo" and "[$LATEST]" in body["log_stream"]
    assert body["request_id"] == response["ResponseMetadata"]["HTTPHeaders"]["x-amzn-requestid"]


def test_function_environment_is_set_in_the_worker(lam: Any) -> None:
    names = ["GREETING", "NUMBER", "AWS_LAMBDA_FUNCTION_NAME", "AWS_REGION"]
    _, body = _invoke(lam, "env", {"names": names})
    assert body == {"GREETING": "hello", "NUMBER": "7", "AWS_LAMBDA_FUNCTION_NAME": "env",
                    "AWS_REGION": "us-east-1"}


def test_function_name_may_be_an_arn_and_qualifier_latest(lam: Any) -> None:
    arn = "arn:aws:lambda:us-east-1:123456789012:function:echo"
    assert _invoke(lam, arn)[0]["StatusCode"] == 200
    assert _invoke(lam, "echo", Qualifier="$LATEST")[0]["StatusCode"] == 200


def test_event_invocation_is_accepted_then_runs(lam: Any, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    response = lam.invoke(FunctionName="writer", InvocationType="Event",
                          Payload=json.dumps({"path": str(marker)}).encode())
    assert response["StatusCode"] == 202
    deadline = time.monotonic() + 5
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert marker.read_text() == response["ResponseMetadata"]["HTTPHeaders"]["x-amzn-requestid"]


def test_dry_run_validates_without_running(lam: Any, endpoint: LambdaEndpoint) -> None:
    before = endpoint.health()["functions"]["echo"].get("invocations", 0)
    response = lam.invoke(FunctionName="echo", InvocationType="DryRun", Payload=b"{}")
    assert response["StatusCode"] == 204
    assert endpoint.health()["functions"]["echo"].get("invocations", 0) == before


def test_handler_exception_is_an_unhandled_function_error(lam: Any) -> None:
    response, body = _invoke(lam, "fail", {"why": "corrupt"}, LogType="Tail")
    assert response["StatusCode"] == 200
    assert response["FunctionError"] == "Unhandled"
    assert body["errorType"] == "ValueError"
    assert body["errorMessage"] == "bad input: corrupt"
    assert any("handlers.py" in frame for frame in body["stackTrace"])
    logs = base64.b64decode(response["LogResult"]).decode()
    assert "about to fail" in logs and "REPORT RequestId" in logs


REPORT = re.compile(r"REPORT RequestId: (?P<id>[0-9a-f-]{36})\tDuration: (?P<duration>\d+\.\d\d) ms"
                    r"\tBilled Duration: (?P<billed>\d+) ms\tMemory Size: 256 MB"
                    r"\tMax Memory Used: (?P<used>\d+) MB(?:\tInit Duration: (?P<init>\d+\.\d\d) ms)?"
                    r"\n$")


def test_log_tail_ends_with_lambdas_report_line_and_only_a_cold_start_has_an_init_duration(
        lam: Any) -> None:
    # GIVEN a function with one execution environment that has served nothing yet
    # WHEN it is invoked twice with LogType=Tail
    first = lam.invoke(FunctionName="report", Payload=b"{}", LogType="Tail")
    second = lam.invoke(FunctionName="report", Payload=b"{}", LogType="Tail")
    # THEN each log tail ends with Lambda's REPORT line for its own request, billed per
    # millisecond rounded up, and only the first (the environment's cold start) has its init
    reports = []
    for response in (first, second):
        tail = base64.b64decode(response["LogResult"]).decode()
        match = REPORT.search(tail)
        assert match, tail
        assert match["id"] == response["ResponseMetadata"]["HTTPHeaders"]["x-amzn-requestid"]
        assert int(match["billed"]) == max(1, math.ceil(float(match["duration"])))
        assert 0 < int(match["used"]) < 256 * 4
        reports.append(match)
    assert reports[0]["init"] is not None and float(reports[0]["init"]) > 0
    assert reports[1]["init"] is None


def test_unserializable_result_is_a_marshal_error(lam: Any) -> None:
    response, body = _invoke(lam, "marshal")
    assert response["FunctionError"] == "Unhandled"
    assert body["errorType"] == "Runtime.MarshalError"


def test_import_error_is_reported_per_invocation(lam: Any) -> None:
    response, body = _invoke(lam, "broken")
    assert response["FunctionError"] == "Unhandled"
    assert body["errorType"] == "Runtime.ImportModuleError"
    assert "no_such_module" in body["errorMessage"]


def test_unknown_function_raises_resource_not_found(lam: Any) -> None:
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.invoke(FunctionName="nope", Payload=b"{}")
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.invoke(FunctionName="echo", Qualifier="7", Payload=b"{}")


def test_payload_that_is_not_json_is_rejected(lam: Any) -> None:
    with pytest.raises(lam.exceptions.InvalidRequestContentException):
        lam.invoke(FunctionName="echo", Payload=b"{not json")


def test_workers_are_warm_and_reused(lam: Any) -> None:
    # GIVEN a function whose worker already imported the handler (the endpoint waits for that)
    asked_at = time.time()
    _, first = _invoke(lam, "count")
    _, second = _invoke(lam, "count")
    # THEN the handler was imported before the first request came (at the worker's start, not
    # on demand), and the same process serves both, with module state kept
    assert first["imported_at"] < asked_at
    assert second["pid"] == first["pid"] and second["imported_at"] == first["imported_at"]
    assert second["calls"] == first["calls"] + 1


def test_timeout_kills_the_worker_and_a_new_one_serves_next(lam: Any) -> None:
    _, before = _invoke(lam, "sleepy", {"seconds": 0})
    started = time.monotonic()
    response, body = _invoke(lam, "sleepy", {"seconds": 10})
    assert time.monotonic() - started < 3
    assert response["FunctionError"] == "Unhandled"
    assert body["errorType"] == "Sandbox.Timedout"
    assert "Task timed out after 1.00 seconds" in body["errorMessage"]
    # the next invocation waits for the replacement worker (a cold start), it is not throttled
    response, after = _invoke(lam, "sleepy", {"seconds": 0})
    assert "FunctionError" not in response
    assert after["pid"] != before["pid"]


def test_memory_limit_kills_the_worker(lam: Any) -> None:
    response, body = _invoke(lam, "hungry", {"mb": 200, "hold_s": 1.0})
    assert response["FunctionError"] == "Unhandled"
    assert body["errorType"] == "Runtime.OutOfMemory"
    response, _ = _invoke(lam, "hungry", {"mb": 1, "hold_s": 0})
    assert "FunctionError" not in response


def test_all_workers_busy_is_throttled(lam: Any, endpoint: LambdaEndpoint) -> None:
    # GIVEN the only worker of `busy` is running a slow invocation
    slow = threading.Thread(target=_invoke, args=(lam, "busy", {"seconds": 1.5}))
    slow.start()
    deadline = time.monotonic() + 5
    while endpoint.health()["functions"]["busy"]["busy"] == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    # WHEN another synchronous invocation arrives THEN it is throttled like reserved concurrency
    with pytest.raises(lam.exceptions.TooManyRequestsException) as info:
        lam.invoke(FunctionName="busy", Payload=b'{"seconds": 0}')
    assert info.value.response["Reason"] == "ReservedFunctionConcurrentInvocationLimitExceeded"
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 429
    slow.join()
    assert _invoke(lam, "busy", {"seconds": 0})[0]["StatusCode"] == 200


def _json_of_size(size: int) -> bytes:
    """A JSON payload of exactly *size* bytes."""
    payload = json.dumps({"pad": "x" * (size - len('{"pad": ""}'))}).encode()
    assert len(payload) == size
    return payload


def test_request_size_limits_are_per_invocation_type(lam: Any) -> None:
    sync_limit, async_limit = 6 * 1024 * 1024, 256 * 1024
    # THEN a RequestResponse request may be 6 MB and not a byte more ...
    assert lam.invoke(FunctionName="sink", Payload=_json_of_size(sync_limit))["StatusCode"] == 200
    with pytest.raises(lam.exceptions.RequestTooLargeException) as info:
        lam.invoke(FunctionName="sink", Payload=_json_of_size(sync_limit + 1))
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 413
    # ... and an Event request 256 KB and not a byte more, though RequestResponse takes that
    # (asked first: the Event invocation below may still hold the worker, and a synchronous call
    # would then be throttled, as on Lambda)
    assert lam.invoke(FunctionName="sink", Payload=_json_of_size(async_limit + 1))[
        "StatusCode"] == 200
    event = {"FunctionName": "sink", "InvocationType": "Event"}
    assert lam.invoke(**event, Payload=_json_of_size(async_limit))["StatusCode"] == 202
    with pytest.raises(lam.exceptions.RequestTooLargeException):
        lam.invoke(**event, Payload=_json_of_size(async_limit + 1))


def test_a_response_over_6_mb_is_a_function_error(lam: Any) -> None:
    limit = 6 * 1024 * 1024
    # GIVEN a handler whose JSON response is 12 bytes longer than the string it is asked for
    response, body = _invoke(lam, "big", {"bytes": limit - 12})
    # THEN a response of exactly 6 MB comes back as it is ...
    assert "FunctionError" not in response and len(body["data"]) == limit - 12
    # ... and one byte more is Lambda's ResponseSizeTooLarge function error, not the payload
    response, body = _invoke(lam, "big", {"bytes": limit - 11})
    assert response["StatusCode"] == 200 and response["FunctionError"] == "Unhandled"
    assert body["errorType"] == "Function.ResponseSizeTooLarge"
    assert str(limit) in body["errorMessage"]


def test_a_worker_that_crashes_is_an_exit_error_and_is_replaced(lam: Any,
                                                               endpoint: LambdaEndpoint) -> None:
    _, before = _invoke(lam, "crashy")
    # WHEN the handler kills its own process (exit status 3)
    response, body = _invoke(lam, "crashy", {"exit": 3})
    # THEN the invocation is a Runtime.ExitError saying how the runtime ended ...
    assert response["FunctionError"] == "Unhandled" and body["errorType"] == "Runtime.ExitError"
    assert "exit status 3" in body["errorMessage"]
    # ... and the next invocation is served by a new worker (it waits for that cold start
    # instead of being throttled): the function's one slot is back
    response, after = _invoke(lam, "crashy")
    assert "FunctionError" not in response and after["pid"] != before["pid"]
    stats = endpoint.health()["functions"]["crashy"]
    assert stats["Runtime.ExitError"] == 1 and stats["pids"] == [after["pid"]]


def test_an_event_invocation_waits_for_a_busy_worker_instead_of_being_throttled(
        lam: Any, endpoint: LambdaEndpoint, tmp_path: Path) -> None:
    # GIVEN the only worker of `single` held by a synchronous invocation until the test says go
    go, mark = tmp_path / "go", tmp_path / "event ran"
    held: dict[str, Any] = {}
    holder = threading.Thread(target=lambda: held.update(
        body=_invoke(lam, "single", {"go": str(go)})[1]))
    holder.start()
    wait_for(lambda: endpoint.health()["functions"]["single"]["busy"] == 1, timeout_s=10,
             what="the worker busy")
    # WHEN an Event invocation arrives meanwhile
    response = lam.invoke(FunctionName="single", InvocationType="Event",
                          Payload=json.dumps({"mark": str(mark)}).encode())
    # THEN it is accepted at once, not throttled, and has not run: there is no worker for it
    assert response["StatusCode"] == 202
    assert not mark.exists()
    # AND once the worker is free, it runs there, after the invocation that held it
    go.touch()
    holder.join(timeout=30)
    wait_for(mark.exists, timeout_s=10, what="the queued Event invocation to run")
    assert float(mark.read_text()) >= held["body"]["ended_at"]


def test_get_function_reports_configuration(lam: Any) -> None:
    config = lam.get_function(FunctionName="echo")["Configuration"]
    assert config["State"] == "Active" and config["Timeout"] == 5
    assert config["Environment"]["Variables"] == {"GREETING": "hello"}


def test_stop_leaves_no_worker_behind(tmp_path: Path) -> None:
    spec = EndpointSpec(functions=(_fn("one", "noop", concurrency=2),))
    with LambdaEndpoint(spec, pythonpath=[REPO], log_path=tmp_path / "log") as server:
        pids = server.health()["functions"]["one"]["pids"]
    assert len(pids) == 2
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists() or "zombie" in _state(pid)


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/status").read_text().split("State:")[1].split("\n")[0].lower()
    except (OSError, IndexError):
        return "gone"
