"""Function URLs on the local Lambda endpoint, over real HTTP: the config API through boto3's lambda
client, the payload format 2.0 event, the response rules, and what the URL answers itself (403,
413, 429, 502)."""

from __future__ import annotations

import base64
import datetime as dt
import json
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import botocore.auth
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from lambda_service.endpoint import LambdaEndpoint
from lambda_service.spec import EndpointSpec, FunctionSpec

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
H = "tests.lambda_service.handlers"
CREDENTIALS = {"testing": "testing"}


def _fn(name: str, handler: str, **kw: Any) -> FunctionSpec:
    kw.setdefault("memory_mb", 256)
    kw.setdefault("concurrency", 1)
    kw.setdefault("timeout_s", 5)
    return FunctionSpec(name=name, handler=f"{H}:{handler}", **kw)


SPEC = EndpointSpec(functions=(
    _fn("web", "url_echo", concurrency=2),
    _fn("custom", "url_custom"),
    _fn("broken", "fail"),
    _fn("slow", "sleep"),
), credentials=CREDENTIALS)


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LambdaEndpoint]:
    log = tmp_path_factory.mktemp("lambda-urls") / "endpoint.log"
    with LambdaEndpoint(SPEC, log_path=log, pythonpath=[REPO], cwd=REPO) as server:
        yield server


def make_public(lam: Any, function: str) -> None:
    """The two statements a NONE-auth URL needs (since October 2025)."""
    lam.add_permission(FunctionName=function, StatementId="url-public",
                       Action="lambda:InvokeFunctionUrl", Principal="*",
                       FunctionUrlAuthType="NONE")
    lam.add_permission(FunctionName=function, StatementId="url-invoke",
                       Action="lambda:InvokeFunction", Principal="*",
                       InvokedViaFunctionUrl=True)


@pytest.fixture()
def public_url(lam: Any) -> Iterator[Any]:
    """Factory: a NONE-auth URL for a function, public; removed (with its policy) afterwards."""
    made: list[str] = []

    def make(function: str) -> str:
        url = lam.create_function_url_config(FunctionName=function, AuthType="NONE")
        make_public(lam, function)
        made.append(function)
        return str(url["FunctionUrl"])

    yield make
    for function in made:
        lam.delete_function_url_config(FunctionName=function)
        for sid in ("url-public", "url-invoke"):
            lam.remove_permission(FunctionName=function, StatementId=sid)


def http(url: str, body: bytes | None = None, *, method: str = "POST",
         headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, {k.lower(): v for k, v in response.headers.items()}, \
                response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read()


def invocations(endpoint: LambdaEndpoint, function: str) -> int:
    return int(endpoint.health()["functions"][function].get("invocations", 0))


def test_url_config_lifecycle_through_boto3(lam: Any) -> None:
    # WHEN a URL is created, it is answered as Lambda answers (201, the fields boto3 models)
    created = lam.create_function_url_config(FunctionName="web", AuthType="AWS_IAM")
    try:
        assert created["ResponseMetadata"]["HTTPStatusCode"] == 201
        assert created["FunctionUrl"].startswith("http://127.0.0.1:")
        assert created["FunctionUrl"].endswith("/")
        assert created["FunctionArn"] == "arn:aws:lambda:us-east-1:123456789012:function:web"
        assert created["AuthType"] == "AWS_IAM" and created["InvokeMode"] == "BUFFERED"
        # THEN a second one for the same function is a conflict
        with pytest.raises(lam.exceptions.ResourceConflictException):
            lam.create_function_url_config(FunctionName="web", AuthType="NONE")
        got = lam.get_function_url_config(FunctionName="web")
        assert got["FunctionUrl"] == created["FunctionUrl"] and got["LastModifiedTime"]
        listed = lam.list_function_url_configs(FunctionName="web")["FunctionUrlConfigs"]
        assert [c["FunctionUrl"] for c in listed] == [created["FunctionUrl"]]
        # AND an update changes the auth type in place, the URL staying the same
        updated = lam.update_function_url_config(FunctionName="web", AuthType="NONE")
        assert updated["AuthType"] == "NONE" and updated["FunctionUrl"] == created["FunctionUrl"]
        names = {f["FunctionName"] for f in lam.list_functions()["Functions"]}
        assert {"web", "custom", "broken", "slow"} <= names
        with pytest.raises(lam.exceptions.InvalidParameterValueException):
            lam.update_function_url_config(FunctionName="web", AuthType="OPEN")
    finally:
        lam.delete_function_url_config(FunctionName="web")
    # WHEN it is deleted, it is gone, and nothing listens on its port any more
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.get_function_url_config(FunctionName="web")
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(created["FunctionUrl"], timeout=5)
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.create_function_url_config(FunctionName="nobody", AuthType="NONE")


def test_a_request_becomes_the_payload_format_2_event(public_url: Any) -> None:
    url = public_url("web")
    body = json.dumps({"hello": "world"}).encode()
    status, headers, raw = http(url + "some/path?a=1&a=2&b=x", body, headers={
        "Content-Type": "application/json", "X-Custom": "yes", "Cookie": "c1=v1; c2=v2",
        "User-Agent": "camera/1.0"})

    assert status == 200 and headers["content-type"] == "application/json"
    event = json.loads(raw)["event"]
    assert event["version"] == "2.0" and event["routeKey"] == "$default"
    assert event["rawPath"] == "/some/path" and event["rawQueryString"] == "a=1&a=2&b=x"
    assert event["queryStringParameters"] == {"a": "1,2", "b": "x"}
    assert event["headers"]["x-custom"] == "yes"
    assert all(name == name.lower() for name in event["headers"])
    assert event["cookies"] == ["c1=v1", "c2=v2"] and "cookie" not in event["headers"]
    http_ = event["requestContext"]["http"]
    assert http_ == {"method": "POST", "path": "/some/path", "protocol": "HTTP/1.1",
                     "sourceIp": "127.0.0.1", "userAgent": "camera/1.0"}
    assert event["requestContext"]["requestId"] == headers["x-amzn-requestid"]
    assert abs(event["requestContext"]["timeEpoch"] / 1000 - dt.datetime.now().timestamp()) < 60
    assert event["requestContext"]["authorizer"] is None
    assert event["body"] == body.decode() and event["isBase64Encoded"] is False
    # a binary body reaches the function base64-encoded
    status, _, raw = http(url, b"\xff\xd8\xff binary", headers={"Content-Type": "image/jpeg"})
    event = json.loads(raw)["event"]
    assert event["isBase64Encoded"] is True
    assert base64.b64decode(event["body"]) == b"\xff\xd8\xff binary"
    # GET without a body has none
    status, _, raw = http(url + "?bucket=b&key=k", method="GET")
    event = json.loads(raw)["event"]
    assert "body" not in event and event["queryStringParameters"] == {"bucket": "b", "key": "k"}


@pytest.mark.parametrize(("returned", "status", "headers", "body"), [
    ({"statusCode": 201, "headers": {"X-Answer": "42"}, "body": "made",
      "cookies": ["a=1; Max-Age=60"]}, 201, {"x-answer": "42", "set-cookie": "a=1; Max-Age=60"},
     b"made"),
    ({"statusCode": 200, "body": base64.b64encode(b"\x00\x01bin").decode(),
      "isBase64Encoded": True, "headers": {"Content-Type": "application/octet-stream"}}, 200,
     {"content-type": "application/octet-stream"}, b"\x00\x01bin"),
    ({"statusCode": 404}, 404, {"content-type": "application/json"}, b""),
    ("Hello, world!", 200, {"content-type": "application/json"}, b'"Hello, world!"'),
    ({"message": "no status"}, 200, {"content-type": "application/json"},
     b'{"message": "no status"}'),
    ({"statusCode": "teapot"}, 502, {}, b'{"Message": "Internal Server Error"}'),
])
def test_the_function_s_answer_becomes_the_http_response(public_url: Any, returned: Any,
                                                         status: int, headers: dict[str, str],
                                                         body: bytes) -> None:
    url = public_url("custom")

    got_status, got_headers, got_body = http(url, json.dumps({"return": returned}).encode(),
                                             headers={"Content-Type": "application/json"})

    assert (got_status, got_body) == (status, body)
    assert {k: got_headers.get(k) for k in headers} == headers


def test_a_function_error_is_a_502(public_url: Any, endpoint: LambdaEndpoint) -> None:
    url = public_url("broken")
    before = invocations(endpoint, "broken")

    status, _, body = http(url, b'{"why": "test"}', headers={"Content-Type": "application/json"})

    assert status == 502 and json.loads(body) == {"Message": "Internal Server Error"}
    assert invocations(endpoint, "broken") == before + 1


def test_a_body_over_6_mb_is_413_and_runs_nothing(public_url: Any,
                                                  endpoint: LambdaEndpoint) -> None:
    url = public_url("web")
    before = invocations(endpoint, "web")

    status, headers, _ = http(url, b"x" * (6 * 1024 * 1024 + 1),
                              headers={"Content-Type": "text/plain"})

    assert status == 413 and headers["x-amzn-errortype"] == "RequestTooLargeException"
    assert invocations(endpoint, "web") == before


def test_a_busy_function_is_a_429(public_url: Any) -> None:
    url = public_url("slow")
    held: list[int] = []
    first = threading.Thread(target=lambda: held.append(http(
        url, b'{"seconds": 2}', headers={"Content-Type": "application/json"})[0]))
    first.start()
    try:
        import time

        time.sleep(0.5)  # the one worker is now busy
        status, headers, _ = http(url, b'{"seconds": 0}',
                                  headers={"Content-Type": "application/json"})
    finally:
        first.join()
    assert status == 429 and headers["x-amzn-errortype"] == "TooManyRequestsException"
    assert held == [200]


def test_none_auth_needs_both_public_statements(lam: Any, endpoint: LambdaEndpoint) -> None:
    url = lam.create_function_url_config(FunctionName="web", AuthType="NONE")["FunctionUrl"]
    try:
        before = invocations(endpoint, "web")
        # GIVEN no policy at all: Lambda's 403, nothing invoked
        status, headers, body = http(url, b"{}", headers={"Content-Type": "application/json"})
        assert (status, json.loads(body)) == (403, {"Message": "Forbidden"})
        assert headers["x-amzn-errortype"] == "AccessDeniedException"
        with pytest.raises(lam.exceptions.ResourceNotFoundException):
            lam.get_policy(FunctionName="web")
        # GIVEN only lambda:InvokeFunctionUrl: still 403 (new URLs need InvokeFunction too)
        lam.add_permission(FunctionName="web", StatementId="url-public",
                           Action="lambda:InvokeFunctionUrl", Principal="*",
                           FunctionUrlAuthType="NONE")
        assert http(url, b"{}", headers={"Content-Type": "application/json"})[0] == 403
        assert invocations(endpoint, "web") == before
        lam.add_permission(FunctionName="web", StatementId="url-invoke",
                           Action="lambda:InvokeFunction", Principal="*",
                           InvokedViaFunctionUrl=True)
        assert http(url, b"{}", headers={"Content-Type": "application/json"})[0] == 200
        policy = json.loads(lam.get_policy(FunctionName="web")["Policy"])
        by_sid = {s["Sid"]: s for s in policy["Statement"]}
        assert by_sid["url-public"]["Condition"] == {
            "StringEquals": {"lambda:FunctionUrlAuthType": "NONE"}}
        assert by_sid["url-invoke"]["Condition"] == {
            "Bool": {"lambda:InvokedViaFunctionUrl": "true"}}
        with pytest.raises(lam.exceptions.ResourceConflictException):
            lam.add_permission(FunctionName="web", StatementId="url-public",
                               Action="lambda:InvokeFunctionUrl", Principal="*",
                               FunctionUrlAuthType="NONE")
        # WHEN a statement is removed, the URL is closed again
        lam.remove_permission(FunctionName="web", StatementId="url-public")
        assert http(url, b"{}", headers={"Content-Type": "application/json"})[0] == 403
    finally:
        lam.delete_function_url_config(FunctionName="web")
        for sid in ("url-public", "url-invoke"):
            try:
                lam.remove_permission(FunctionName="web", StatementId=sid)
            except lam.exceptions.ResourceNotFoundException:
                pass


def sign(url: str, body: bytes, *, secret: str = "testing", region: str = "us-east-1",
         service: str = "lambda") -> dict[str, str]:
    request = AWSRequest(method="POST", url=url, data=body,
                         headers={"Content-Type": "application/json"})
    SigV4Auth(Credentials("testing", secret), service, region).add_auth(request)
    return dict(request.headers)


def test_aws_iam_answers_signed_requests_only(lam: Any, endpoint: LambdaEndpoint,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    url = lam.create_function_url_config(FunctionName="web", AuthType="AWS_IAM")["FunctionUrl"]
    try:
        body = b'{"frame": 1}'
        before = invocations(endpoint, "web")
        # WHEN signed with the local cloud's credentials: answered, the caller in the event
        status, _, raw = http(url + "?x=1", body, headers=sign(url + "?x=1", body))
        assert status == 200
        iam = json.loads(raw)["event"]["requestContext"]["authorizer"]["iam"]
        assert iam["accessKey"] == "testing" and iam["accountId"] == "123456789012"
        assert invocations(endpoint, "web") == before + 1
        # WHEN unsigned, signed with the wrong secret, for another service or region, too long
        # ago, or the body changed after signing: 403 each time, and nothing is invoked
        stale = dt.datetime.now(dt.UTC).replace(tzinfo=None) - dt.timedelta(minutes=10)
        with monkeypatch.context() as m:
            m.setattr(botocore.auth, "get_current_datetime", lambda: stale)
            old = sign(url, body)
        refused = {
            "unsigned": http(url, body, headers={"Content-Type": "application/json"}),
            "wrong secret": http(url, body, headers=sign(url, body, secret="not-the-secret")),
            "other service": http(url, body, headers=sign(url, body, service="s3")),
            "other region": http(url, body, headers=sign(url, body, region="eu-west-1")),
            "ten minutes old": http(url, body, headers=old),
            "body changed": http(url, body + b" ", headers=sign(url, body)),
        }
        assert {why: got[0] for why, got in refused.items()} == dict.fromkeys(refused, 403)
        assert all(got[1]["x-amzn-errortype"] == "AccessDeniedException"
                   for got in refused.values())
        assert invocations(endpoint, "web") == before + 1
    finally:
        lam.delete_function_url_config(FunctionName="web")
