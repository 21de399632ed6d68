"""S3 → Lambda on the local cloud: a bucket's LambdaFunctionConfigurations reach our Lambda
service as Event invocations (moto's S3, patched in localcloud.moto_main, hands each event to
localcloud.s3_lambda_delivery), over real HTTP: the key arrives URL-encoded the way S3 encodes it
and decodes to what was uploaded, filters hold, and the upload never waits for the function; and
S3 refuses to notify a function whose policy does not let it, as on AWS."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote_plus

import boto3
import pytest
from botocore.exceptions import ClientError
from polling import wait_for

from lambda_service.endpoint import LambdaEndpoint
from lambda_service.net import free_port
from lambda_service.spec import EndpointSpec, FunctionSpec
from localcloud.moto_server import MotoServer

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
FUNCTION_ARN = "arn:aws:lambda:us-east-1:123456789012:function:{}"


@pytest.fixture(scope="module")
def evidence(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("s3-events")


@pytest.fixture(scope="module")
def cloud(evidence: Path, tmp_path_factory: pytest.TempPathFactory,
          ) -> Iterator[tuple[MotoServer, LambdaEndpoint]]:
    """moto told where the Lambda service is, and the service (on the port chosen first)."""
    logs = tmp_path_factory.mktemp("s3-lambda")
    lambda_port = free_port("127.0.0.1")
    with MotoServer(log_path=logs / "moto.log",
                    lambda_url=f"http://127.0.0.1:{lambda_port}") as moto:
        spec = EndpointSpec(functions=(
            FunctionSpec(name="saver", handler="tests.lambda_service.handlers:save_event",
                         memory_mb=256, concurrency=1, timeout_s=30,
                         environment={"EVIDENCE_DIR": str(evidence)}),
            FunctionSpec(name="slow", handler="tests.lambda_service.handlers:sleep",
                         memory_mb=256, concurrency=1, timeout_s=30)),
            aws_endpoint_url=moto.url, credentials={"testing": "testing"})
        with LambdaEndpoint(spec, port=lambda_port, log_path=logs / "lambda.log",
                            pythonpath=[REPO], cwd=REPO) as endpoint:
            yield moto, endpoint


@pytest.fixture()
def s3(cloud: tuple[MotoServer, LambdaEndpoint]) -> Any:
    return boto3.client("s3", endpoint_url=cloud[0].url, region_name="us-east-1",
                        aws_access_key_id="testing", aws_secret_access_key="testing")


@pytest.fixture()
def lam(cloud: tuple[MotoServer, LambdaEndpoint]) -> Any:
    return boto3.client("lambda", endpoint_url=cloud[1].url, region_name="us-east-1",
                        aws_access_key_id="testing", aws_secret_access_key="testing")


def _allow_s3(lam: Any, function: str, bucket: str, *, sid: str = "") -> None:
    lam.add_permission(FunctionName=function, StatementId=sid or f"s3-{bucket}",
                       Action="lambda:InvokeFunction", Principal="s3.amazonaws.com",
                       SourceArn=f"arn:aws:s3:::{bucket}", SourceAccount="123456789012")


def _events(evidence: Path) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted(evidence.glob("*.json"))]


def test_an_upload_reaches_the_function_with_its_key_decoded(
        s3: Any, lam: Any, evidence: Path, cloud: tuple[MotoServer, LambdaEndpoint]) -> None:
    # GIVEN a bucket that notifies the function for new .mp4 objects under videos/
    s3.create_bucket(Bucket="direct")
    _allow_s3(lam, "saver", "direct")
    s3.put_bucket_notification_configuration(Bucket="direct", NotificationConfiguration={
        "LambdaFunctionConfigurations": [{
            "Id": "to-saver", "LambdaFunctionArn": FUNCTION_ARN.format("saver"),
            "Events": ["s3:ObjectCreated:*"],
            "Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": "videos/"},
                                               {"Name": "suffix", "Value": ".mp4"}]}}}]})
    key = "videos/my clip ü+1 (2).mp4"
    # WHEN it is uploaded, with objects the filter leaves out
    s3.put_object(Bucket="direct", Key="other/x.mp4", Body=b"no")
    s3.put_object(Bucket="direct", Key="videos/x.txt", Body=b"no")
    s3.put_object(Bucket="direct", Key=key, Body=b"video bytes")
    # THEN the function got one S3 event, the key encoded as S3 encodes it and decoding back
    [event] = wait_for(lambda: _events(evidence), timeout_s=20, what="the S3 event")
    [record] = event["Records"]
    assert record["eventSource"] == "aws:s3"
    assert record["eventName"] == "ObjectCreated:Put"
    assert record["s3"]["bucket"]["name"] == "direct"
    assert record["s3"]["configurationId"] == "to-saver"
    assert " " not in record["s3"]["object"]["key"]
    assert unquote_plus(record["s3"]["object"]["key"]) == key
    assert record["s3"]["object"]["size"] == len(b"video bytes")
    time.sleep(1.0)  # the filtered-out uploads invoke nothing, later either
    assert len(_events(evidence)) == 1
    stats = cloud[1].health()["functions"]["saver"]
    assert stats["events_queued"] == 1 and stats.get("events_failed", 0) == 0


def test_the_upload_does_not_wait_for_the_function(
        s3: Any, lam: Any, cloud: tuple[MotoServer, LambdaEndpoint]) -> None:
    s3.create_bucket(Bucket="slow-bucket")
    _allow_s3(lam, "slow", "slow-bucket")
    s3.put_bucket_notification_configuration(Bucket="slow-bucket", NotificationConfiguration={
        "LambdaFunctionConfigurations": [{"LambdaFunctionArn": FUNCTION_ARN.format("slow"),
                                          "Events": ["s3:ObjectCreated:*"]}]})
    started = time.monotonic()
    for i in range(3):  # the function sleeps 1 s each (its default): 3 s in all, one at a time
        s3.put_object(Bucket="slow-bucket", Key=f"k{i}", Body=b"x")
    assert time.monotonic() - started < 1.0
    wait_for(lambda: cloud[1].health()["functions"]["slow"].get("events_succeeded", 0) == 3,
             timeout_s=20, what="the three events to run")


@pytest.mark.parametrize("grant", ["none", "other bucket", "other account", "no function"])
def test_s3_refuses_a_function_it_may_not_invoke(s3: Any, lam: Any, grant: str) -> None:
    bucket = f"guarded-{grant.replace(' ', '-')}"
    s3.create_bucket(Bucket=bucket)
    function = "nope" if grant == "no function" else "saver"
    if grant == "other bucket":
        _allow_s3(lam, "saver", "someone-elses-bucket", sid=f"s3-{bucket}")
    elif grant == "other account":
        lam.add_permission(FunctionName="saver", StatementId=f"s3-{bucket}",
                           Action="lambda:InvokeFunction", Principal="s3.amazonaws.com",
                           SourceArn=f"arn:aws:s3:::{bucket}", SourceAccount="210987654321")
    try:
        with pytest.raises(ClientError) as caught:
            s3.put_bucket_notification_configuration(Bucket=bucket, NotificationConfiguration={
                "LambdaFunctionConfigurations": [{
                    "LambdaFunctionArn": FUNCTION_ARN.format(function),
                    "Events": ["s3:ObjectCreated:*"]}]})
        assert caught.value.response["Error"]["Code"] == "InvalidArgument"
        assert "Unable to validate the following destination configurations" in str(caught.value)
        assert "LambdaFunctionConfigurations" not in s3.get_bucket_notification_configuration(
            Bucket=bucket)
    finally:
        if grant in ("other bucket", "other account"):
            lam.remove_permission(FunctionName="saver", StatementId=f"s3-{bucket}")


def test_an_upload_while_the_lambda_service_is_down_reaches_it_once_it_is_back(
        tmp_path: Path) -> None:
    # GIVEN S3 notifying a function, whose Lambda service then goes down
    lambda_port = free_port("127.0.0.1")
    saved = tmp_path / "saved"
    saved.mkdir()
    spec = EndpointSpec(functions=(
        FunctionSpec(name="saver", handler="tests.lambda_service.handlers:save_event",
                     memory_mb=256, concurrency=1, timeout_s=30,
                     environment={"EVIDENCE_DIR": str(saved)}),))
    with MotoServer(log_path=tmp_path / "moto.log",
                    lambda_url=f"http://127.0.0.1:{lambda_port}") as moto:
        endpoint = LambdaEndpoint(spec, port=lambda_port, log_path=tmp_path / "lambda.log",
                                  pythonpath=[REPO], cwd=REPO).start()
        try:
            s3 = boto3.client("s3", endpoint_url=moto.url, region_name="us-east-1",
                              aws_access_key_id="testing", aws_secret_access_key="testing")
            lam = boto3.client("lambda", endpoint_url=endpoint.url, region_name="us-east-1",
                               aws_access_key_id="testing", aws_secret_access_key="testing")
            s3.create_bucket(Bucket="outage")
            _allow_s3(lam, "saver", "outage")
            s3.put_bucket_notification_configuration(Bucket="outage", NotificationConfiguration={
                "LambdaFunctionConfigurations": [{"LambdaFunctionArn": FUNCTION_ARN.format(
                    "saver"), "Events": ["s3:ObjectCreated:*"]}]})
            endpoint.stop()
            # WHEN objects are uploaded meanwhile
            for i in range(3):
                s3.put_object(Bucket="outage", Key=f"while down {i}.mp4", Body=b"x")
            time.sleep(1.0)
            assert list(saved.iterdir()) == []
            # THEN once the service is back, every upload's event reaches the function, once
            endpoint.start()
            events = wait_for(lambda: len(_events(saved)) == 3 and _events(saved),
                              timeout_s=30, what="the three events after the outage")
            assert sorted(unquote_plus(e["Records"][0]["s3"]["object"]["key"])
                          for e in events) == [f"while down {i}.mp4" for i in range(3)]
        finally:
            endpoint.stop()
