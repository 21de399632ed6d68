"""The built image run as Lambda runs it: awslambdaric and the CMD handler in the image's root
file system (read-only except /tmp, an unprivileged user), through the Runtime API, reached with
the same boto3 calls as the worker-process functions; and Lambda's failure behaviour for image
environments (init error, timeout, memory, crash: only that environment dies, the next
invocation gets a fresh one)."""

from __future__ import annotations

import base64
import errno
import io
import json
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import av
import boto3
import pytest
from botocore.config import Config

from lambda_service.endpoint import LambdaEndpoint
from lambda_service.spec import EndpointSpec, FunctionSpec
from localcloud.cloud import IMAGE_GALLERY, LocalCloud

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))
from integration_helpers import Pipeline
from polling import wait_for

pytestmark = pytest.mark.integration

PYTHON = "/opt/function/bin/python"
#: A minimal runtime in the image's own Python, speaking the Runtime API: it reports what it may
#: write and who it runs as, or misbehaves on request (the failure paths need a runtime that
#: fails on cue; the real function's paths are tested with awslambdaric below).
PROBE = r"""
import json, os, time, urllib.request, uuid
api = "http://" + os.environ["AWS_LAMBDA_RUNTIME_API"] + "/2018-06-01/runtime/invocation/"
boot, held = str(uuid.uuid4()), []
while True:
    with urllib.request.urlopen(api + "next") as r:
        rid, event = r.headers["Lambda-Runtime-Aws-Request-Id"], json.loads(r.read())
    if event.get("do") == "crash":
        os._exit(3)
    if event.get("do") == "sleep":
        time.sleep(event["s"])
    if event.get("do") == "allocate":
        held.append(b"\x01" * (event["mb"] << 20))
        time.sleep(1)
    writes = {}
    for path in event.get("paths", []):
        try:
            with open(path, "w") as f:
                f.write("x")
            writes[path] = "written"
        except OSError as e:
            writes[path] = e.errno
    mounts = {}
    for line in open("/proc/self/mountinfo"):
        fields = line.split()
        rest = fields[fields.index("-") + 1:]
        mounts[fields[4]] = [fields[5].split(",")[0], rest[0]]
    answer = {"boot": boot, "uid": os.getuid(), "writes": writes, "mounts": mounts,
              "env": {k: os.environ.get(k) for k in event.get("env", [])}}
    urllib.request.urlopen(urllib.request.Request(
        api + rid + "/response", data=json.dumps(answer).encode(), method="POST"))
"""


@contextmanager
def endpoint(tmp_path: Path, *functions: FunctionSpec) -> Iterator[Any]:
    with LambdaEndpoint(EndpointSpec(functions=functions), log_path=tmp_path / "lambda.log",
                        env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}) as ep:
        yield boto3.client("lambda", endpoint_url=ep.url, region_name="us-east-1",
                           aws_access_key_id="x", aws_secret_access_key="y",
                           config=Config(retries={"max_attempts": 1}, read_timeout=120)), ep


def _invoke(lam: Any, name: str, event: dict, **kwargs: Any) -> tuple[dict, str | None]:
    response = lam.invoke(FunctionName=name, Payload=json.dumps(event), **kwargs)
    return json.loads(response["Payload"].read()), response.get("FunctionError")


def probe(image: str, **overrides: Any) -> FunctionSpec:
    return FunctionSpec(**{"name": "probe", "image": image, "entrypoint": (PYTHON, "-c", PROBE),
                           "timeout_s": 10, "memory_mb": 256, "concurrency": 1, **overrides})


def test_the_function_writes_nowhere_but_tmp_and_runs_unprivileged(function_image: str,
                                                                    tmp_path: Path) -> None:
    paths = ["/tmp/probe", "/var/task/probe", "/var/task/lambda_image/probe", "/opt/models/p",
             "/opt/function/p", "/probe", "/etc/probe", "/root/probe", "/var/tmp/probe"]
    with endpoint(tmp_path, probe(function_image)) as (lam, _):
        body, error = _invoke(lam, "probe", {"paths": paths, "env": [
            "AWS_LAMBDA_RUNTIME_API", "AWS_LAMBDA_FUNCTION_NAME", "_HANDLER", "LAMBDA_TASK_ROOT",
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "AWS_REGION", "INFERENCE_RUNTIME"]})

    assert error is None, body
    assert body["writes"].pop("/tmp/probe") == "written"
    # EROFS (30) or, for the sandbox user, EACCES (13) before it: nothing else is writable
    assert set(body["writes"].values()) <= {errno.EROFS, errno.EACCES}, body["writes"]
    assert body["mounts"]["/"][0] == "ro", "the image's root is mounted read-only"
    assert body["mounts"]["/tmp"] == ["rw", "tmpfs"], "only /tmp is writable, and fresh"
    assert body["uid"] == 993, "Lambda's sandbox user, not root"
    env = body["env"]
    assert env["AWS_LAMBDA_RUNTIME_API"].startswith("127.0.0.1:")
    assert (env["AWS_LAMBDA_FUNCTION_NAME"], env["LAMBDA_TASK_ROOT"], env["AWS_REGION"]) == \
        ("probe", "/var/task", "us-east-1")
    assert env["_HANDLER"] == "lambda_image.handlers.s3_handler", "the image's CMD"
    assert env["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"] == "256"
    assert env["INFERENCE_RUNTIME"] == "onnx", "the image's own ENV"


@pytest.mark.parametrize("event,overrides,error_type", [
    ({"do": "sleep", "s": 5}, {"timeout_s": 1}, "Sandbox.Timedout"),
    ({"do": "allocate", "mb": 300}, {"memory_mb": 128}, "Runtime.OutOfMemory"),
    ({"do": "crash"}, {}, "Runtime.ExitError"),
], ids=["timeout", "memory", "crash"])
def test_a_failed_environment_dies_alone_and_the_next_invocation_gets_a_fresh_one(
        function_image: str, tmp_path: Path, event: dict, overrides: dict,
        error_type: str) -> None:
    with endpoint(tmp_path, probe(function_image, **overrides)) as (lam, ep):
        first, error = _invoke(lam, "probe", {})
        assert error is None
        # WHEN an invocation times out, outgrows its memory or kills its runtime
        failed, error = _invoke(lam, "probe", event)
        # THEN it fails as on Lambda, and the next one runs in a new environment
        assert (error, failed["errorType"]) == ("Unhandled", error_type), failed
        after, error = _invoke(lam, "probe", {})
        assert error is None and after["boot"] != first["boot"]
        again, _ = _invoke(lam, "probe", {})
        assert again["boot"] == after["boot"], "a healthy environment stays warm"
        stats = ep.health()["functions"]["probe"]
    assert stats[error_type] == 1 and stats["invocations"] == 4


def test_a_missing_gallery_fails_init_with_a_clear_runtime_init_error(function_image: str,
                                                                      tmp_path: Path) -> None:
    spec = FunctionSpec(name="broken", image=function_image, concurrency=1, timeout_s=30,
                        memory_mb=512,
                        environment={"GALLERY_PATH": "/opt/gallery/absent",
                                     "AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "y"})
    with endpoint(tmp_path, spec) as (lam, ep):
        assert ep.health()["functions"]["broken"]["init_error"].startswith("GalleryError")
        pids = set(ep.health()["functions"]["broken"]["pids"])
        answers = [_invoke(lam, "broken", {"Records": []}) for _ in range(2)]
        wait_for(lambda: ep.health()["functions"]["broken"]["starting"] == 0, timeout_s=60,
                 what="the replacement environment's init")
        later = set(ep.health()["functions"]["broken"]["pids"])
    for body, error in answers:
        assert (error, body["errorType"]) == ("Unhandled", "Runtime.InitError"), body
        assert "GalleryError: cannot read gallery /opt/gallery/absent" in body["errorMessage"]
        assert body["stackTrace"], "the runtime's own stack trace is passed on"
    assert pids.isdisjoint(later), "each failed init's environment is discarded"


def _jpeg_of_first_frame(video: Path) -> bytes:
    with av.open(str(video)) as container:
        image = next(container.decode(video=0)).to_image()
    out = io.BytesIO()
    image.save(out, "JPEG", quality=92)
    return out.getvalue()


def test_a_frame_and_a_video_through_the_same_image(gallery_image: str, course_data: Path,
                                                    boto_session: Any, aws_env: str,
                                                    tmp_path: Path) -> None:
    # GIVEN the course's resources on moto, and one image serving both entry points by CMD
    s3, sqs, ddb = (boto_session.client(n) for n in ("s3", "sqs", "dynamodb"))
    for bucket in ("in-bucket", "out-bucket"):
        s3.create_bucket(Bucket=bucket)
    queue = sqs.create_queue(QueueName="results")["QueueUrl"]
    ddb.create_table(TableName="students", BillingMode="PAY_PER_REQUEST",
                     KeySchema=[{"AttributeName": "name", "KeyType": "HASH"}],
                     AttributeDefinitions=[{"AttributeName": "name", "AttributeType": "S"}])
    for record in json.loads((course_data / "student_data.json").read_text()):
        ddb.put_item(TableName="students", Item={k: {"S": str(v)} for k, v in record.items()})
    s3.upload_file(str(course_data / "videos" / "test_7.mp4"), "in-bucket", "clips/test_7.mp4")
    env = {"GALLERY_PATH": IMAGE_GALLERY, "OUTPUT_BUCKET": "out-bucket",
           "OUTPUT_QUEUE_URL": queue, "STUDENTS_TABLE": "students", "AWS_ENDPOINT_URL": aws_env,
           "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
    common = {"image": gallery_image, "concurrency": 1, "timeout_s": 60, "memory_mb": 512,
              "environment": env}
    with endpoint(tmp_path, FunctionSpec(name="videos", **common),
                  FunctionSpec(name="frames", command=("lambda_image.handlers.frame_handler",),
                               **common)) as (lam, _):
        # WHEN a video goes to the S3 entry point and a frame to the Function URL one
        video, video_error = _invoke(lam, "videos", {"Records": [{
            "eventName": "ObjectCreated:Put", "s3": {"bucket": {"name": "in-bucket"},
                                                     "object": {"key": "clips/test_7.mp4"}}}]})
        content = base64.b64encode(_jpeg_of_first_frame(course_data / "videos" / "test_0.mp4"))
        frame, frame_error = _invoke(lam, "frames", {"content": content.decode(),
                                                     "request_id": "cam-1", "filename": "f.jpg"},
                                     LogType="Tail")
        configuration = lam.get_function(FunctionName="frames")["Configuration"]
    # THEN each answers with its person
    assert video_error is None and frame_error is None, (video, frame)
    (result,) = video["results"]
    assert result["status"] == "ok" and result["csv"].startswith("morgan_freeman,")
    assert result["embedder"] == "dlib"
    assert s3.get_object(Bucket="out-bucket", Key="clips/test_7.csv")["Body"].read().decode() \
        == result["csv"]
    assert frame["statusCode"] == 200
    answer = json.loads(frame["body"])
    assert (answer["request_id"], answer["result"]) == ("cam-1", "president_trump")
    assert answer["people"][0]["name"] == "president_trump"
    assert configuration["PackageType"] == "Image"
    assert configuration["ImageConfigResponse"]["ImageConfig"]["Command"] == [
        "lambda_image.handlers.frame_handler"]


@pytest.fixture(scope="module")
def image_cloud(function_image: str, course_data: Path,
                tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCloud]:
    work = tmp_path_factory.mktemp("image-cloud")
    with LocalCloud(gallery=course_data / "encoding", students=course_data / "student_data.json",
                    concurrency=2, work_dir=work, image=function_image) as cloud:
        yield cloud


def _root_changes(cloud: LocalCloud) -> list[str]:
    """Files written into the function's root: its working container's overlay upper layer."""
    assert cloud.endpoint is not None
    prefix = f"lambda-{cloud.resources.function_name}-{cloud.endpoint.pid}-r"
    names = subprocess.run(["buildah", "containers", "--format", "{{.ContainerName}}"],
                           capture_output=True, text=True, check=True).stdout.split()
    # the function's current pool's root (its reserved concurrency made a second pool)
    (name,) = [n for n in names if n.startswith(prefix)]
    merged = Path(subprocess.run(
        ["buildah", "inspect", "--type", "container", "--format", "{{.MountPoint}}", name],
        capture_output=True, text=True, check=True).stdout.strip())
    upper = merged.parent / "diff"
    assert merged.is_dir() and upper.is_dir(), (merged, upper)
    return sorted(str(p.relative_to(upper)) for p in upper.rglob("*"))


def test_the_course_clips_via_the_daemon_through_the_image_8_of_8(
        image_cloud: LocalCloud, course_data: Path, course_records: dict[str, str],
        tmp_path: Path) -> None:
    # GIVEN the local cloud running the function from its image, and the daemon
    pipeline = Pipeline(image_cloud, tmp_path)
    pipeline.shared_queues().begin()
    videos = sorted((course_data / "videos").glob("*.mp4"))
    # WHEN the course clips are uploaded
    with pipeline.daemon():
        for video in videos:
            pipeline.s3.upload_file(str(video), pipeline.bucket, video.name)
        wait_for(lambda: len(pipeline.result_files()) == len(videos), timeout_s=240,
                 interval_s=0.5, what="a result per clip")
    # THEN every clip has the course's record, from the image's ONNX runtime
    for video in videos:
        assert (pipeline.results / f"{video.stem}.csv").read_text().splitlines()[0] == \
            course_records[video.name], video.name
    stats = image_cloud.function_stats()
    assert stats["invocations"] == len(videos) and stats["init_error"] is None
    assert image_cloud.function_spec().image.startswith("localhost/face-recognition-with:")
    # AND nothing was written into the image's file system
    assert _root_changes(image_cloud) == []


def _image_id(image: str) -> str:
    return subprocess.run(["buildah", "inspect", "--type", "image", "--format", "{{.FromImageID}}",
                           image], check=True, capture_output=True, text=True).stdout.strip()


@pytest.mark.parametrize("source", ["container storage", "oci archive"])
def test_a_function_made_with_create_function_from_the_image_recognises_a_frame(
        source: str, gallery_image: str, course_data: Path, boto_session: Any, aws_env: str,
        tmp_path: Path) -> None:
    # GIVEN the image by its name in the host's container storage, or as an OCI archive a build
    # elsewhere wrote (its layers uncompressed: quicker to write here)
    image_uri = gallery_image
    if source == "oci archive":
        archive = tmp_path / "face-recognition.tar"
        subprocess.run(["buildah", "push", "--quiet", "--disable-compression", gallery_image,
                        f"oci-archive:{archive}"], check=True, capture_output=True, timeout=300)
        image_uri = f"oci-archive:{archive}"
    # AND a Lambda service that serves nothing yet, and the course's students on moto
    ddb = boto_session.client("dynamodb")
    ddb.create_table(TableName="students-made", BillingMode="PAY_PER_REQUEST",
                     KeySchema=[{"AttributeName": "name", "KeyType": "HASH"}],
                     AttributeDefinitions=[{"AttributeName": "name", "AttributeType": "S"}])
    for record in json.loads((course_data / "student_data.json").read_text()):
        ddb.put_item(TableName="students-made",
                     Item={k: {"S": str(v)} for k, v in record.items()})
    env = {"GALLERY_PATH": IMAGE_GALLERY, "STUDENTS_TABLE": "students-made",
           "AWS_ENDPOINT_URL": aws_env, "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing"}
    with endpoint(tmp_path) as (lam, _):
        # WHEN an operator makes the function as on AWS: the image, its CMD, settings
        made = lam.create_function(
            FunctionName="frames-made", PackageType="Image", Role="arn:aws:iam::1:role/x",
            Code={"ImageUri": image_uri},
            ImageConfig={"Command": ["lambda_image.handlers.frame_handler"]},
            MemorySize=512, Timeout=60, Environment={"Variables": env})
        lam.get_waiter("function_active_v2").wait(
            FunctionName="frames-made", WaiterConfig={"Delay": 0.5, "MaxAttempts": 240})
        content = base64.b64encode(_jpeg_of_first_frame(course_data / "videos" / "test_0.mp4"))
        frame, error = _invoke(lam, "frames-made", {"content": content.decode(),
                                                    "request_id": "made-1", "filename": "f.jpg"})
        got = lam.get_function(FunctionName="frames-made")
    # THEN it runs from the image and recognises the face
    assert made["PackageType"] == "Image" and made["State"] in ("Pending", "Active")
    assert got["Code"]["ImageUri"] == image_uri  # as given; it runs what that resolved to
    assert got["Code"]["ResolvedImageUri"] == (
        gallery_image if source == "container storage" else _image_id(gallery_image))
    assert got["Configuration"]["ImageConfigResponse"]["ImageConfig"]["Command"] == [
        "lambda_image.handlers.frame_handler"]
    assert error is None, frame
    assert json.loads(frame["body"])["result"] == "president_trump"
