"""Only callers that hold the key may use the service: with ``authenticate`` on, every API request
is SigV4-verified against the spec's credentials, over real HTTP, and one that is not signed
right gets Lambda's 403 error and runs nothing."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.exceptions import ClientError
from lambda_service_helpers import serve

from lambda_service.endpoint import LambdaEndpoint
from lambda_service.spec import EndpointSpec, FunctionSpec, SpecError

pytestmark = pytest.mark.integration

KEY, SECRET = "AKIDPRIVATEDAEMON01", "daemon-secret-of-this-test"
SPEC = EndpointSpec(functions=(FunctionSpec(
    name="guarded", handler="tests.lambda_service.handlers:echo", concurrency=1, memory_mb=128,
    timeout_s=5),), credentials={KEY: SECRET}, authenticate=True)


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LambdaEndpoint]:
    with serve(SPEC, tmp_path_factory, "lambda-auth") as server:
        yield server


def _client(endpoint: LambdaEndpoint, key: str, secret: str) -> Any:
    return boto3.client("lambda", endpoint_url=endpoint.url, region_name="us-east-1",
                        aws_access_key_id=key, aws_secret_access_key=secret,
                        config=Config(retries={"max_attempts": 0}))


def _runs(endpoint: LambdaEndpoint) -> int:
    return int(endpoint.health()["functions"]["guarded"].get("invocations", 0))


def _raw(endpoint: LambdaEndpoint, method: str, path: str, body: bytes = b"",
         headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], dict[str, Any]]:
    request = urllib.request.Request(endpoint.url + path, data=body or None, method=method,
                                     headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), json.loads(exc.read() or b"{}")


def test_the_key_holder_invokes_lists_and_dry_runs(endpoint: LambdaEndpoint) -> None:
    lam = _client(endpoint, KEY, SECRET)
    before = _runs(endpoint)
    response = lam.invoke(FunctionName="guarded", Payload=b'{"hello": "world"}')
    assert response["StatusCode"] == 200 and "FunctionError" not in response
    assert json.loads(response["Payload"].read())["event"] == {"hello": "world"}
    assert lam.invoke(FunctionName="guarded", InvocationType="DryRun")["StatusCode"] == 204
    assert [f["FunctionName"] for f in lam.list_functions()["Functions"]] == ["guarded"]
    assert _runs(endpoint) == before + 1


@pytest.mark.parametrize(("key", "secret", "error_type"), [
    (KEY, "a-wrong-secret", "InvalidSignatureException"),
    ("AKIDSOMEONEELSE0001", SECRET, "UnrecognizedClientException"),
])
def test_a_wrong_signature_or_unknown_key_is_refused_and_runs_nothing(
        endpoint: LambdaEndpoint, key: str, secret: str, error_type: str) -> None:
    lam = _client(endpoint, key, secret)
    before = _runs(endpoint)
    for call in (lambda: lam.invoke(FunctionName="guarded", Payload=b"{}"),
                 lambda: lam.invoke(FunctionName="guarded", InvocationType="Event",
                                    Payload=b"{}"),
                 lambda: lam.list_functions(),
                 lambda: lam.put_function_event_invoke_config(FunctionName="guarded",
                                                             MaximumRetryAttempts=0)):
        with pytest.raises(ClientError) as caught:
            call()
        assert caught.value.response["Error"]["Code"] == error_type
        assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert _runs(endpoint) == before


def test_an_unsigned_request_or_a_body_changed_after_signing_is_refused(
        endpoint: LambdaEndpoint) -> None:
    before = _runs(endpoint)
    path = "/2015-03-31/functions/guarded/invocations"
    # no signature at all, on the API and on the admin route
    status, headers, _ = _raw(endpoint, "POST", path, b"{}")
    assert (status, headers["x-amzn-ErrorType"]) == (403, "MissingAuthenticationTokenException")
    status, headers, _ = _raw(endpoint, "POST", "/_faults", b'{"error_rate": 1}')
    assert (status, headers["x-amzn-ErrorType"]) == (403, "MissingAuthenticationTokenException")
    # signed by the key holder, then the payload swapped on the way
    signed = AWSRequest(method="POST", url=endpoint.url + path, data=b'{"amount": 1}')
    SigV4Auth(Credentials(KEY, SECRET), "lambda", "us-east-1").add_auth(signed)
    status, headers, _ = _raw(endpoint, "POST", path, b'{"amount": 1000}',
                              dict(signed.headers.items()))
    assert (status, headers["x-amzn-ErrorType"]) == (403, "InvalidSignatureException")
    # and the same request as signed goes through
    status, _, body = _raw(endpoint, "POST", path, b'{"amount": 1}', dict(signed.headers.items()))
    assert status == 200 and body["event"] == {"amount": 1}
    assert _runs(endpoint) == before + 1
    # the health check stays open (systemd and the tests read it unsigned); it runs nothing
    assert _raw(endpoint, "GET", "/health")[0] == 200


def test_authenticate_without_credentials_is_a_spec_error() -> None:
    with pytest.raises(SpecError, match="needs credentials"):
        EndpointSpec(functions=SPEC.functions, authenticate=True)
