"""The invoker against the FAKE Lambda endpoint: success, FunctionError, throttling, 5xx, refusals."""

from __future__ import annotations

from typing import Any

import boto3
import pytest
import tenacity
from fake_lambda import FakeLambda, Reply, function_error, ok, throttled, unavailable

from openstack_handler.daemon.backoff import compute_backoff
from openstack_handler.daemon.errors import FunctionFailed, InvokeFailed, InvokeUnavailable
from openstack_handler.daemon.invoker import (
    LambdaInvoker,
    backoff_wait,
    is_retryable_invoke_error,
    lambda_client_config,
)

PAYLOAD = {"Records": [{"eventName": "ObjectCreated:Put", "s3": {
    "bucket": {"name": "b"}, "object": {"key": "my+clip.mp4", "eTag": "e", "size": 1}}}]}


def make_invoker(session: boto3.session.Session, sleeps: list[float] | None = None,
                 **kwargs: Any) -> LambdaInvoker:
    client = session.client("lambda", config=lambda_client_config(function_timeout_s=5,
                                                                  concurrency=2))
    defaults: dict[str, Any] = {"client": client, "function_name": "recognise",
                                "max_attempts": 4, "backoff_initial_s": 0.01,
                                "backoff_max_s": 0.05}
    if sleeps is not None:
        defaults["sleep"] = sleeps.append
    defaults.update(kwargs)
    return LambdaInvoker(**defaults)


def test_client_config_has_long_read_timeout_and_no_sdk_retries() -> None:
    config = lambda_client_config(function_timeout_s=60, concurrency=32)
    assert config.read_timeout == 90
    assert config.retries["total_max_attempts"] == 1
    assert config.max_pool_connections >= 32


def test_success_returns_the_parsed_payload(boto_session, fake_lambda: FakeLambda) -> None:
    result = make_invoker(boto_session).invoke(PAYLOAD)
    assert result["results"][0]["key"] == "my clip.mp4"
    assert fake_lambda.calls == [("recognise", PAYLOAD)]


def test_function_error_raises_function_failed_without_retry(boto_session,
                                                             fake_lambda: FakeLambda) -> None:
    fake_lambda.behaviour = lambda name, payload: function_error("OSError", "disk on fire")
    with pytest.raises(FunctionFailed) as info:
        make_invoker(boto_session).invoke(PAYLOAD)
    assert (info.value.error_type, info.value.message) == ("OSError", "disk on fire")
    assert len(fake_lambda.calls) == 1  # the function ran once: never re-run it ourselves


def test_throttling_is_retried_with_backoff_then_succeeds(boto_session,
                                                          fake_lambda: FakeLambda) -> None:
    replies = iter([throttled(), throttled()])
    fake_lambda.behaviour = lambda name, payload: next(replies, None) or ok(payload)
    sleeps: list[float] = []
    result = make_invoker(boto_session, sleeps).invoke(PAYLOAD)
    assert result["results"][0]["status"] == "ok"
    assert len(fake_lambda.calls) == 3
    assert len(sleeps) == 2 and all(0 <= s <= 0.05 for s in sleeps)


def test_persistent_5xx_gives_up_as_retryable(boto_session, fake_lambda: FakeLambda) -> None:
    fake_lambda.behaviour = lambda name, payload: Reply(
        500, {"message": "internal"}, {"x-amzn-ErrorType": "ServiceException"})
    with pytest.raises(InvokeUnavailable):
        make_invoker(boto_session, []).invoke(PAYLOAD)
    assert len(fake_lambda.calls) == 4  # max_attempts


def test_client_errors_are_not_retried(boto_session, fake_lambda: FakeLambda) -> None:
    fake_lambda.behaviour = lambda name, payload: Reply(
        404, {"Type": "User", "message": "Function not found"},
        {"x-amzn-ErrorType": "ResourceNotFoundException"})
    with pytest.raises(InvokeFailed, match="ResourceNotFoundException"):
        make_invoker(boto_session, []).invoke(PAYLOAD)
    assert len(fake_lambda.calls) == 1


def test_connection_refused_is_retried_then_retryable(boto_session, monkeypatch) -> None:
    from lambda_service.net import free_port

    monkeypatch.setenv("AWS_ENDPOINT_URL_LAMBDA", f"http://127.0.0.1:{free_port()}")
    sleeps: list[float] = []
    with pytest.raises(InvokeUnavailable):
        make_invoker(boto_session, sleeps, max_attempts=3).invoke(PAYLOAD)
    assert len(sleeps) == 2


def test_a_dry_run_probe_runs_nothing_and_tells_down_from_refused(
        boto_session, fake_lambda: FakeLambda, monkeypatch) -> None:
    from lambda_service.net import free_port

    sleeps: list[float] = []
    invoker = make_invoker(boto_session, sleeps)
    # an answering Lambda: 204, and nothing is run
    invoker.probe()
    assert fake_lambda.dry_runs == 1 and fake_lambda.calls == []
    # failing or throttling: down, probe again later (one try each: the backoff is the caller's)
    for reply in (unavailable(), throttled()):
        fake_lambda.dry_run = lambda name, reply=reply: reply
        with pytest.raises(InvokeUnavailable):
            invoker.probe()
    assert fake_lambda.dry_runs == 3 and sleeps == []
    # refused: no such function
    fake_lambda.dry_run = lambda name: Reply(404, {"Type": "User", "message": "Function not found"},
                                             {"x-amzn-ErrorType": "ResourceNotFoundException"})
    with pytest.raises(InvokeFailed, match="ResourceNotFoundException"):
        invoker.probe()
    # unreachable
    monkeypatch.setenv("AWS_ENDPOINT_URL_LAMBDA", f"http://127.0.0.1:{free_port()}")
    with pytest.raises(InvokeUnavailable, match="cannot reach Lambda"):
        make_invoker(boto_session, sleeps).probe()
    assert sleeps == [] and fake_lambda.calls == []


def test_retry_predicate_and_backoff_bounds() -> None:
    from botocore.exceptions import ClientError, ReadTimeoutError

    def client_error(code: str, status: int) -> ClientError:
        return ClientError({"Error": {"Code": code},
                            "ResponseMetadata": {"HTTPStatusCode": status}}, "Invoke")

    assert is_retryable_invoke_error(client_error("TooManyRequestsException", 429))
    assert is_retryable_invoke_error(client_error("ServiceException", 500))
    assert not is_retryable_invoke_error(client_error("InvalidRequestContentException", 400))
    assert not is_retryable_invoke_error(ReadTimeoutError(endpoint_url="x"))  # may have run

    wait = backoff_wait(initial_s=0.5, cap_s=4.0)
    for attempt in range(1, 12):
        state = tenacity.RetryCallState(None, None, (), {})
        state.attempt_number = attempt
        assert 0 <= wait(state) <= min(4.0, 0.5 * 2 ** (attempt - 1))
    assert compute_backoff(1, initial_s=1, cap_s=30, rng=lambda: 1.0) == 1.0
    assert compute_backoff(4, initial_s=1, cap_s=30, rng=lambda: 1.0) == 8.0
    assert compute_backoff(100, initial_s=1, cap_s=30, rng=lambda: 1.0) == 30.0
    assert compute_backoff(3, initial_s=1, cap_s=30, rng=lambda: 0.5) == 2.0
    with pytest.raises(ValueError):
        compute_backoff(0)
