"""Fault injection in the local Lambda endpoint: the spec, the decisions, and the real endpoint."""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import nullcontext
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from polling import wait_for

from lambda_service.endpoint import LambdaEndpoint
from lambda_service.faults import (
    Fault,
    FaultInjector,
    FaultSpec,
    FaultSpecError,
    payload_keys,
)
from lambda_service.spec import EndpointSpec, FunctionSpec, SpecError

REPO = Path(__file__).resolve().parents[2]


def event(*keys: str) -> bytes:
    return json.dumps({"Records": [{"eventName": "ObjectCreated:Put", "s3": {
        "bucket": {"name": "b"}, "object": {"key": quote_plus(k, safe="/")}}} for k in keys]
                       }).encode()


def test_spec_validates_and_round_trips() -> None:
    spec = FaultSpec.from_json({"error_rate": 0.2, "timeout_rate": 0.05, "throttle_rate": 0.1,
                                "error_keys": ["poison/"], "seed": 3})
    assert spec.active and FaultSpec.from_json(spec.to_json()) == spec
    assert not FaultSpec().active
    for bad in ({"error_rate": 1.5}, {"error_rate": 0.6, "throttle_rate": 0.6},
                {"error_keys": "poison"}, {"seed": "x"}, {"surprise": 1}, []):
        with pytest.raises(FaultSpecError):
            FaultSpec.from_json(bad)
    with pytest.raises(SpecError):
        FunctionSpec(name="f", handler="m:f", faults={"error_rate": 2})


def test_env_override_parses_json_and_ignores_empty() -> None:
    assert FaultSpec.from_env({}) is None
    assert FaultSpec.from_env({"LOCALCLOUD_FAULTS": " "}) is None
    assert FaultSpec.from_env({"LOCALCLOUD_FAULTS": '{"throttle_rate": 1}'}).throttle_rate == 1.0
    with pytest.raises(FaultSpecError):
        FaultSpec.from_env({"LOCALCLOUD_FAULTS": "{nope"})


def test_function_spec_carries_faults_through_json() -> None:
    fn = FunctionSpec(name="f", handler="m:f", faults={"hang_keys": ["slow/"]})
    again = EndpointSpec.from_json(EndpointSpec(functions=(fn,)).to_json()).functions[0]
    assert again.faults == FaultSpec(hang_keys=("slow/",))
    assert "faults" not in FunctionSpec(name="g", handler="m:f").to_json()


def test_keyed_faults_match_decoded_keys_and_win_over_rates() -> None:
    assert payload_keys(event("dir/my clip+1.mp4")) == ["dir/my clip+1.mp4"]
    assert payload_keys(b"not json") == [] and payload_keys(b'{"Records": [1]}') == []
    injector = FaultInjector(FaultSpec(error_keys=("poison/",), hang_keys=("my clip",)))
    assert injector.decide(event("poison/a.mp4")) is Fault.ERROR
    assert injector.decide(event("dir/my clip.mp4")) is Fault.HANG
    assert injector.decide(event("fine.mp4")) is None
    assert injector.stats()["injected_errors"] == 1 and injector.stats()["injected_hangs"] == 1


def test_rates_are_honoured_and_a_seed_repeats_the_sequence() -> None:
    spec = FaultSpec(error_rate=0.2, timeout_rate=0.05, throttle_rate=0.1, seed=42)
    first = FaultInjector(spec)
    seq = [first.decide(event("v.mp4")) for _ in range(4000)]
    second = FaultInjector(spec)
    assert [second.decide(event("v.mp4")) for _ in range(4000)] == seq
    counts = Counter(seq)
    assert abs(counts[Fault.ERROR] / 4000 - 0.2) < 0.03
    assert abs(counts[Fault.THROTTLE] / 4000 - 0.1) < 0.02
    assert abs(counts[Fault.TIMEOUT] / 4000 - 0.05) < 0.015
    first.configure(FaultSpec())
    assert first.decide(event("v.mp4")) is None


# -- the real endpoint -------------------------------------------------------------------------

SPEC = EndpointSpec(functions=(
    FunctionSpec(name="echo", handler="tests.lambda_service.handlers:echo", memory_mb=256,
                 concurrency=1, timeout_s=1, faults={"error_keys": ["poison/"]}),
    FunctionSpec(name="other", handler="tests.lambda_service.handlers:noop", memory_mb=256,
                 concurrency=1, timeout_s=5),
    FunctionSpec(name="marker", handler="tests.lambda_service.handlers:hold_then_mark",
                 memory_mb=256, concurrency=1, timeout_s=5),
))


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LambdaEndpoint]:
    log = tmp_path_factory.mktemp("faults") / "endpoint.log"
    with LambdaEndpoint(SPEC, log_path=log, pythonpath=[REPO], cwd=REPO) as server:
        yield server


@pytest.fixture()
def lam(endpoint: LambdaEndpoint) -> Iterator[Any]:
    yield boto3.client("lambda", endpoint_url=endpoint.url, region_name="us-east-1",
                       aws_access_key_id="testing", aws_secret_access_key="testing",
                       config=Config(retries={"total_max_attempts": 1}, read_timeout=30))
    endpoint.set_faults({"error_keys": ["poison/"]}, "echo")
    endpoint.set_faults(None, "other")
    endpoint.set_faults(None, "marker")


def _invoke(lam: Any, name: str, payload: bytes) -> tuple[dict[str, Any], Any]:
    response = lam.invoke(FunctionName=name, Payload=payload)
    return response, json.loads(response["Payload"].read())


@pytest.mark.integration
def test_spec_faults_poison_one_key_only(lam: Any, endpoint: LambdaEndpoint) -> None:
    before = endpoint.health()["functions"]["echo"]
    response, body = _invoke(lam, "echo", event("poison/v.mp4"))
    assert response["FunctionError"] == "Unhandled" and body["errorType"] == "InjectedFault"
    response, body = _invoke(lam, "echo", event("fine/v.mp4"))
    assert "FunctionError" not in response and body["function_name"] == "echo"
    after = endpoint.health()["functions"]["echo"]
    assert after["injected_errors"] == before.get("injected_errors", 0) + 1
    assert after["invocations"] == before.get("invocations", 0) + 1  # the handler ran once
    assert after["faults"]["error_keys"] == ["poison/"]


@pytest.mark.integration
def test_admin_post_changes_faults_at_run_time(lam: Any, endpoint: LambdaEndpoint) -> None:
    # WHEN every invocation of "other" is throttled
    specs = endpoint.set_faults({"throttle_rate": 1.0}, "other")
    assert specs["other"]["throttle_rate"] == 1.0 and specs["echo"]["throttle_rate"] == 0.0
    with pytest.raises(ClientError) as info:
        _invoke(lam, "other", b"{}")
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 429
    assert info.value.response["Error"]["Code"] == "TooManyRequestsException"
    # WHEN it always times out: the slot is held for the function's timeout (1 s for echo)
    endpoint.set_faults({"timeout_rate": 1.0}, "echo")
    started = time.monotonic()
    response, body = _invoke(lam, "echo", event("v.mp4"))
    assert 0.9 < time.monotonic() - started < 5
    assert response["FunctionError"] == "Unhandled" and body["errorType"] == "Sandbox.Timedout"
    # WHEN the cause is fixed, both work again
    endpoint.set_faults(None)
    assert "FunctionError" not in _invoke(lam, "echo", event("poison/v.mp4"))[0]
    assert lam.invoke(FunctionName="other", Payload=b"{}")["StatusCode"] == 200


def _faults(endpoint: LambdaEndpoint) -> dict[str, Any]:
    """GET /_faults: every function's fault spec."""
    import urllib.request

    with urllib.request.urlopen(endpoint.url + "/_faults", timeout=5) as response:
        return dict(json.loads(response.read()))


@pytest.mark.integration
@pytest.mark.parametrize(("query", "body", "status", "error_type"), [
    ("", b'{"error_rate": 3}', 400, "InvalidParameterValueException"),
    ("", b"{not json", 400, "InvalidParameterValueException"),
    ("?function=nope", b"{}", 404, "ResourceNotFoundException"),
], ids=["bad spec", "not JSON", "unknown function"])
def test_admin_rejects_a_bad_spec_and_an_unknown_function(
        endpoint: LambdaEndpoint, query: str, body: bytes, status: int, error_type: str) -> None:
    import urllib.error
    import urllib.request

    before = _faults(endpoint)
    request = urllib.request.Request(endpoint.url + "/_faults" + query, data=body, method="POST")
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(request, timeout=5)
    assert info.value.code == status
    assert info.value.headers["x-amzn-ErrorType"] == error_type
    assert _faults(endpoint) == before  # nothing was changed
    assert set(before) == {"echo", "other", "marker"}


@pytest.mark.integration
@pytest.mark.parametrize("spec", [{"error_rate": 1.0}, {"throttle_rate": 1.0}],
                         ids=["errors", "throttles"])
def test_faults_apply_to_request_response_only(lam: Any, endpoint: LambdaEndpoint,
                                               tmp_path: Path, spec: dict[str, float]) -> None:
    # GIVEN a function whose every RequestResponse invocation fails by injection
    endpoint.set_faults(spec, "marker")
    with pytest.raises(ClientError) if "throttle_rate" in spec else nullcontext():
        response, body = _invoke(lam, "marker", b"{}")
        assert body["errorType"] == "InjectedFault"
    # THEN an Event invocation is accepted and its handler runs, untouched by the faults ...
    mark = tmp_path / "ran"
    response = lam.invoke(FunctionName="marker", InvocationType="Event",
                          Payload=json.dumps({"mark": str(mark)}).encode())
    assert response["StatusCode"] == 202
    wait_for(mark.exists, timeout_s=10, what="the Event invocation to run")
    # ... and a DryRun only validates
    assert lam.invoke(FunctionName="marker", InvocationType="DryRun",
                      Payload=b"{}")["StatusCode"] == 204


@pytest.mark.integration
def test_env_variable_overrides_every_function(tmp_path: Path) -> None:
    import os

    env = {**os.environ, "LOCALCLOUD_FAULTS": '{"error_rate": 1.0}'}
    spec = EndpointSpec(functions=(SPEC.functions[1],))
    with LambdaEndpoint(spec, log_path=tmp_path / "e.log", pythonpath=[REPO], cwd=REPO,
                        env=env) as server:
        lam = boto3.client("lambda", endpoint_url=server.url, region_name="us-east-1",
                           aws_access_key_id="testing", aws_secret_access_key="testing")
        response = lam.invoke(FunctionName="other", Payload=b"{}")
        assert json.loads(response["Payload"].read())["errorType"] == "InjectedFault"
