"""Functions made with the calls operators make on AWS — CreateFunction, GetFunction,
UpdateFunctionConfiguration, UpdateFunctionCode, DeleteFunction, ListFunctions and reserved
concurrency — with boto3 against the real service over HTTP: each success, and each error type."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import signal
import time
import zipfile
from collections.abc import Iterator
from typing import Any

import pytest
from botocore.exceptions import ClientError
from lambda_service_helpers import lambda_client, serve
from polling import wait_for

from lambda_service.endpoint import LambdaEndpoint
from lambda_service.spec import EndpointSpec, FunctionSpec

pytestmark = pytest.mark.integration

ROLE = "arn:aws:iam::123456789012:role/handler-functions"
SPEC = EndpointSpec(functions=(FunctionSpec(
    name="from-spec", handler="tests.lambda_service.handlers:echo", concurrency=1,
    memory_mb=128, timeout_s=5),), default_concurrency=2)

GREETER = '''
import os

def handler(event, context):
    return {"greeting": os.environ.get("GREETING", "hello"), "version": VERSION,
            "event": event, "memory": context.memory_limit_in_mb}

VERSION = {version}
'''


def _zip(version: int) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("greeter.py", GREETER.replace("{version}", str(version)))
    return buffer.getvalue()


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LambdaEndpoint]:
    with serve(SPEC, tmp_path_factory, "lambda-functions") as server:
        yield server


def _active(lam: Any, name: str) -> dict[str, Any]:
    """boto3's own waiter: until the function's State is Active and its last update done."""
    lam.get_waiter("function_active_v2").wait(FunctionName=name,
                                              WaiterConfig={"Delay": 0.2, "MaxAttempts": 100})
    lam.get_waiter("function_updated_v2").wait(FunctionName=name,
                                               WaiterConfig={"Delay": 0.2, "MaxAttempts": 100})
    return lam.get_function(FunctionName=name)


def _call(lam: Any, name: str, payload: Any = None) -> dict[str, Any]:
    response = lam.invoke(FunctionName=name, Payload=json.dumps(payload or {}).encode())
    assert "FunctionError" not in response, response["Payload"].read()
    return json.loads(response["Payload"].read())


def test_a_zip_function_is_created_changed_and_deleted_as_on_aws(lam: Any) -> None:
    # GIVEN a function made with CreateFunction from a zip archive
    created = lam.create_function(
        FunctionName="greeter", Runtime="python3.11", Role=ROLE, Handler="greeter.handler",
        Code={"ZipFile": _zip(1)}, Timeout=10, MemorySize=256, Description="says hello",
        Environment={"Variables": {"GREETING": "hi"}})
    assert created["ResponseMetadata"]["HTTPStatusCode"] == 201
    assert (created["FunctionName"], created["PackageType"], created["Handler"],
            created["MemorySize"], created["Timeout"]) == ("greeter", "Zip", "greeter.handler",
                                                          256, 10)
    assert created["FunctionArn"].endswith(":function:greeter") and created["CodeSize"] > 0
    got = _active(lam, "greeter")
    assert got["Configuration"]["State"] == "Active"
    assert got["Configuration"]["Environment"]["Variables"] == {"GREETING": "hi"}
    assert "Concurrency" not in got  # no reserved concurrency: the service's default slots
    # WHEN it is invoked, THEN its own code runs with its settings
    assert _call(lam, "greeter", {"n": 1}) == {"greeting": "hi", "version": 1,
                                               "event": {"n": 1}, "memory": 256}
    names = [f["FunctionName"] for f in lam.list_functions()["Functions"]]
    assert sorted(names) == ["from-spec", "greeter"]
    # WHEN its configuration and then its code change, THEN new invocations see each change
    revision = got["Configuration"]["RevisionId"]
    updated = lam.update_function_configuration(
        FunctionName="greeter", Environment={"Variables": {"GREETING": "bonjour"}},
        MemorySize=512, RevisionId=revision)
    assert updated["RevisionId"] != revision
    _active(lam, "greeter")
    assert _call(lam, "greeter")["greeting"] == "bonjour"
    assert _call(lam, "greeter")["memory"] == 512
    lam.update_function_code(FunctionName="greeter", ZipFile=_zip(2))
    _active(lam, "greeter")
    assert _call(lam, "greeter")["version"] == 2
    # a stale RevisionId is refused
    with pytest.raises(ClientError) as stale:
        lam.update_function_configuration(FunctionName="greeter", Timeout=20,
                                          RevisionId=revision)
    assert stale.value.response["Error"]["Code"] == "PreconditionFailedException"
    # WHEN it is deleted, THEN it is gone for every call
    lam.delete_function(FunctionName="greeter")
    for call in (lambda: lam.get_function(FunctionName="greeter"),
                 lambda: lam.invoke(FunctionName="greeter", Payload=b"{}"),
                 lambda: lam.delete_function(FunctionName="greeter")):
        with pytest.raises(lam.exceptions.ResourceNotFoundException):
            call()


def test_reserved_concurrency_is_the_functions_slots(lam: Any, endpoint: LambdaEndpoint) -> None:
    lam.create_function(FunctionName="slotted", Runtime="python3.11", Role=ROLE,
                        Handler="greeter.handler", Code={"ZipFile": _zip(1)})
    _active(lam, "slotted")
    assert endpoint.health()["functions"]["slotted"]["concurrency"] == 2  # the default
    assert lam.get_function_concurrency(FunctionName="slotted").get(
        "ReservedConcurrentExecutions") is None
    put = lam.put_function_concurrency(FunctionName="slotted", ReservedConcurrentExecutions=3)
    assert put["ReservedConcurrentExecutions"] == 3
    assert lam.get_function_concurrency(FunctionName="slotted")[
        "ReservedConcurrentExecutions"] == 3
    assert lam.get_function(FunctionName="slotted")["Concurrency"] == {
        "ReservedConcurrentExecutions": 3}
    wait_for(lambda: endpoint.health()["functions"]["slotted"]["idle"] == 3, timeout_s=30,
             what="three warm environments")
    lam.delete_function_concurrency(FunctionName="slotted")
    wait_for(lambda: endpoint.health()["functions"]["slotted"]["concurrency"] == 2,
             timeout_s=30, what="back to the default slots")
    lam.delete_function(FunctionName="slotted")


def _code(exc: pytest.ExceptionInfo[ClientError]) -> tuple[str, int]:
    response = exc.value.response
    return response["Error"]["Code"], response["ResponseMetadata"]["HTTPStatusCode"]


@pytest.mark.parametrize(("kwargs", "expected"), [
    ({"FunctionName": "from-spec", "Runtime": "python3.11", "Handler": "greeter.handler",
      "Code": {"ZipFile": _zip(1)}}, ("ResourceConflictException", 409)),
    ({"FunctionName": "bad name", "Runtime": "python3.11", "Handler": "greeter.handler",
      "Code": {"ZipFile": _zip(1)}}, ("InvalidParameterValueException", 400)),
    ({"FunctionName": "no-handler", "Runtime": "python3.11", "Code": {"ZipFile": _zip(1)}},
     ("InvalidParameterValueException", 400)),
    ({"FunctionName": "nodejs", "Runtime": "nodejs20.x", "Handler": "index.handler",
      "Code": {"ZipFile": _zip(1)}}, ("InvalidParameterValueException", 400)),
    ({"FunctionName": "not-a-zip", "Runtime": "python3.11", "Handler": "greeter.handler",
      "Code": {"ZipFile": b"these bytes are no zip archive"}},
     ("InvalidParameterValueException", 400)),
    ({"FunctionName": "from-s3", "Runtime": "python3.11", "Handler": "greeter.handler",
      "Code": {"S3Bucket": "code", "S3Key": "greeter.zip"}},
     ("InvalidParameterValueException", 400)),
    ({"FunctionName": "huge", "Runtime": "python3.11", "Handler": "greeter.handler",
      "Code": {"ZipFile": _zip(1)}, "MemorySize": 20480}, ("InvalidParameterValueException", 400)),
    ({"FunctionName": "forever", "Runtime": "python3.11", "Handler": "greeter.handler",
      "Code": {"ZipFile": _zip(1)}, "Timeout": 901}, ("InvalidParameterValueException", 400)),
    ({"FunctionName": "reserved-env", "Runtime": "python3.11", "Handler": "greeter.handler",
      "Code": {"ZipFile": _zip(1)}, "Environment": {"Variables": {"AWS_REGION": "x"}}},
     ("InvalidParameterValueException", 400)),
    ({"FunctionName": "no-image", "PackageType": "Image",
      "Code": {"ImageUri": "localhost/no-such-image:latest"}},
     ("InvalidParameterValueException", 400)),
    ({"FunctionName": "no-archive", "PackageType": "Image",
      "Code": {"ImageUri": "oci-archive:/nonexistent/face-recognition.tar"}},
     ("InvalidParameterValueException", 400)),
    ({"FunctionName": "relative-archive", "PackageType": "Image",
      "Code": {"ImageUri": "oci-archive:face-recognition.tar"}},
     ("InvalidParameterValueException", 400)),
])
def test_bad_input_gets_lambdas_error_types_and_makes_nothing(
        lam: Any, kwargs: dict[str, Any], expected: tuple[str, int]) -> None:
    before = sorted(f["FunctionName"] for f in lam.list_functions()["Functions"])
    with pytest.raises(ClientError) as caught:
        lam.create_function(Role=ROLE, **kwargs)
    assert _code(caught) == expected, caught.value.response["Error"]
    assert sorted(f["FunctionName"] for f in lam.list_functions()["Functions"]) == before


def test_an_archive_whose_members_leave_their_directory_is_refused(lam: Any) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("../../escape.py", "x = 1\n")
    with pytest.raises(ClientError) as caught:
        lam.create_function(FunctionName="escape", Runtime="python3.11", Role=ROLE,
                            Handler="escape.handler", Code={"ZipFile": buffer.getvalue()})
    assert _code(caught) == ("InvalidParameterValueException", 400)
    assert "leaves its directory" in caught.value.response["Error"]["Message"]


def test_unknown_functions_are_not_found_for_every_call(lam: Any) -> None:
    calls = [lambda: lam.get_function(FunctionName="nobody"),
             lambda: lam.update_function_configuration(FunctionName="nobody", Timeout=5),
             lambda: lam.update_function_code(FunctionName="nobody", ZipFile=_zip(1)),
             lambda: lam.put_function_concurrency(FunctionName="nobody",
                                                  ReservedConcurrentExecutions=1),
             lambda: lam.get_function_concurrency(FunctionName="nobody"),
             lambda: lam.delete_function(FunctionName="nobody")]
    for call in calls:
        with pytest.raises(ClientError) as caught:
            call()
        assert _code(caught) == ("ResourceNotFoundException", 404)


def test_an_update_lets_running_invocations_finish_on_the_old_version(
        lam: Any, endpoint: LambdaEndpoint) -> None:
    slow = GREETER + "\nimport time\n_h = handler\n\ndef handler(event, context):\n" \
        "    time.sleep(event.get('sleep', 0))\n    return _h(event, context)\n"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("greeter.py", slow.replace("{version}", "1"))
    lam.create_function(FunctionName="busy-greeter", Runtime="python3.11", Role=ROLE,
                        Handler="greeter.handler", Code={"ZipFile": buffer.getvalue()},
                        Timeout=30)
    _active(lam, "busy-greeter")
    slow_lam = lambda_client(endpoint.url, read_timeout=30)
    import threading

    answers: list[dict[str, Any]] = []
    runner = threading.Thread(target=lambda: answers.append(
        _call(slow_lam, "busy-greeter", {"sleep": 2})))
    runner.start()
    time.sleep(0.5)
    lam.update_function_code(FunctionName="busy-greeter", ZipFile=_zip(2))
    runner.join(timeout=30)
    assert answers and answers[0]["version"] == 1  # finished where it started
    _active(lam, "busy-greeter")
    assert _call(lam, "busy-greeter")["version"] == 2
    lam.delete_function(FunctionName="busy-greeter")


def test_functions_outlive_the_process_in_its_state_directory(
        tmp_path: Any, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Lambda's functions outlive any one server: a service with a state directory, killed
    with -9, serves the same functions, code, configuration and slots when it starts again."""
    spec = dataclasses.replace(SPEC, state_dir=str(tmp_path / "state"))
    # GIVEN functions made, configured and deleted through the API
    with serve(spec, tmp_path_factory, "lambda-state-1") as first:
        lam = lambda_client(first.url)
        lam.create_function(FunctionName="kept", Runtime="python3.11", Role=ROLE,
                            Handler="greeter.handler", Code={"ZipFile": _zip(1)})
        _active(lam, "kept")
        lam.update_function_code(FunctionName="kept", ZipFile=_zip(2))
        _active(lam, "kept")
        lam.update_function_configuration(FunctionName="kept", MemorySize=512,
                                          Environment={"Variables": {"GREETING": "again"}})
        lam.put_function_concurrency(FunctionName="kept", ReservedConcurrentExecutions=1)
        revision = _active(lam, "kept")["Configuration"]["RevisionId"]
        lam.create_function(FunctionName="gone", Runtime="python3.11", Role=ROLE,
                            Handler="greeter.handler", Code={"ZipFile": _zip(3)})
        lam.delete_function(FunctionName="gone")
        # WHEN the service is killed without a chance to save anything
        assert first.pid is not None
        os.kill(first.pid, signal.SIGKILL)
    # THEN a new process on the same state directory serves them as they were
    with serve(spec, tmp_path_factory, "lambda-state-2") as second:
        lam = lambda_client(second.url)
        got = lam.get_function(FunctionName="kept")
        assert got["Configuration"]["State"] == "Active"  # warm before it said it was ready
        assert (got["Configuration"]["RevisionId"], got["Configuration"]["MemorySize"],
                got["Concurrency"]) == (revision, 512, {"ReservedConcurrentExecutions": 1})
        assert _call(lam, "kept")["greeting"] == "again" and _call(lam, "kept")["version"] == 2
        names = sorted(f["FunctionName"] for f in lam.list_functions()["Functions"])
        assert names == ["from-spec", "kept"]
        with pytest.raises(ClientError) as missing:
            lam.get_function(FunctionName="gone")
        assert missing.value.response["Error"]["Code"] == "ResourceNotFoundException"
    # AND only the current version's code is left on disk
    assert len(list((tmp_path / "state" / "code").iterdir())) == 1
