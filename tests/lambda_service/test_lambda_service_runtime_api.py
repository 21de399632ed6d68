"""The Lambda Runtime API of one environment, driven by the real runtime client: awslambdaric
(the image's entry point), here from the test venv against handlers in tests/localcloud."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from lambda_service.runtime_api import Invocation, RuntimeAPI, deadline_ms

REPO = Path(__file__).resolve().parents[2]
ARN = "arn:aws:lambda:us-east-1:123456789012:function:probe"


@contextmanager
def runtime(handler: str) -> Iterator[tuple[RuntimeAPI, subprocess.Popen[bytes]]]:
    """A Runtime API and awslambdaric serving *handler* against it."""
    api = RuntimeAPI().start()
    env = {**os.environ, "AWS_LAMBDA_RUNTIME_API": api.address, "PYTHONPATH": str(REPO),
           "AWS_LAMBDA_FUNCTION_NAME": "probe", "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "128",
           "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST", "AWS_LAMBDA_LOG_GROUP_NAME": "/aws/lambda/p",
           "AWS_LAMBDA_LOG_STREAM_NAME": "s"}
    proc = subprocess.Popen([sys.executable, "-m", "awslambdaric", handler], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        yield api, proc
    finally:
        proc.kill()
        proc.wait()
        api.stop()


def _invoke(api: RuntimeAPI, event: dict, *, timeout_s: float = 30.0, **extra):
    request_id = str(uuid.uuid4())
    api.submit(Invocation(request_id=request_id, payload=json.dumps(event).encode(),
                          deadline_ms=deadline_ms(time.monotonic() + timeout_s),
                          function_arn=ARN, trace_id="Root=1-0-0;Sampled=0", **extra))
    result = api.wait_result(request_id, timeout_s)
    assert result is not None, "no result from the runtime"
    return request_id, result


def test_next_delivers_the_event_with_lambdas_headers_and_the_response_comes_back() -> None:
    with runtime("tests.lambda_service.handlers.echo") as (api, _):
        assert api.wait_init(60) and api.init_error is None
        request_id, result = _invoke(api, {"hello": "world"}, timeout_s=20,
                                     client_context={"custom": {"a": "b"}})

    body = json.loads(result.payload)
    assert not result.error
    assert body["event"] == {"hello": "world"}
    assert body["request_id"] == request_id  # from Lambda-Runtime-Aws-Request-Id
    assert body["arn"] == ARN  # Lambda-Runtime-Invoked-Function-Arn
    assert 15_000 < body["remaining_ms"] <= 20_000  # Lambda-Runtime-Deadline-Ms
    assert body["function_name"] == "probe" and body["memory"] == "128"


def test_the_same_runtime_serves_invocation_after_invocation() -> None:
    with runtime("tests.lambda_service.handlers.count") as (api, _):
        assert api.wait_init(60)
        calls = [json.loads(_invoke(api, {})[1].payload)["calls"] for _ in range(3)]

    assert calls == [1, 2, 3]


def test_a_handler_exception_is_posted_as_an_invocation_error() -> None:
    with runtime("tests.lambda_service.handlers.fail") as (api, _):
        assert api.wait_init(60)
        _, result = _invoke(api, {"why": "broken clip"})

    body = json.loads(result.payload)
    assert result.error and result.error_type == "ValueError"
    assert body["errorType"] == "ValueError" and "broken clip" in body["errorMessage"]


def test_an_exception_at_import_is_an_init_error_and_the_runtime_exits() -> None:
    with runtime("tests.lambda_service.broken_at_import.handler") as (api, proc):
        assert api.wait_init(60)
        error = api.init_error
        assert proc.wait(30) != 0

    assert error is not None
    assert error.message() == "RuntimeError: gallery missing at init"
    assert error.stack(), "the runtime's stack trace is kept"


def test_an_unknown_module_is_an_import_module_init_error() -> None:
    with runtime("tests.lambda_service.no_such_module.handler") as (api, _):
        assert api.wait_init(60)
        error = api.init_error

    assert error is not None and error.error_type == "Runtime.ImportModuleError"
    assert "no_such_module" in error.message()


def _post(api: RuntimeAPI, path: str, body: bytes = b"{}") -> int:
    request = urllib.request.Request(f"http://{api.address}{path}", data=body, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_a_result_for_a_request_not_in_flight_is_refused_and_unknown_paths_are_404() -> None:
    api = RuntimeAPI().start()
    try:
        assert _post(api, "/2018-06-01/runtime/invocation/not-in-flight/response") == 400
        assert _post(api, "/2018-06-01/runtime/somewhere") == 404
        assert _post(api, "/2018-06-01/runtime/init/error") == 202
        assert api.wait_init(1) and api.init_error is not None
    finally:
        api.stop()


def test_a_second_submit_while_one_is_in_flight_is_a_platform_bug() -> None:
    api = RuntimeAPI().start()
    try:
        invocation = Invocation("r1", b"{}", 0, ARN, "t")
        api.submit(invocation)
        with pytest.raises(RuntimeError, match="already in flight"):
            api.submit(Invocation("r2", b"{}", 0, ARN, "t"))
    finally:
        api.stop()
