"""Fixtures for the recognition function: models loaded once, rendered clips, cloud resources."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest

from lambda_image import handlers
from lambda_image.camera_tracks import CameraTracks
from lambda_image.config import FunctionSettings
from lambda_image.recognize import Recognizer
from lambda_image.records import StudentRecords


@pytest.fixture(scope="session")
def course_gallery(course_data: Path) -> Path:
    return course_data / "encoding"


@pytest.fixture(scope="session")
def expected(course_data: Path) -> dict[str, dict[str, str]]:
    with open(course_data / "expected.csv", newline="") as fh:
        return {row["video"]: row for row in csv.DictReader(fh)}


@pytest.fixture(scope="session")
def recognizer(course_gallery: Path) -> Recognizer:
    """The dlib pipeline over the course gallery, built once for the whole session."""
    return Recognizer.from_settings(FunctionSettings(gallery_path=course_gallery))


@pytest.fixture(scope="session")
def random_facenet_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A RANDOMLY INITIALISED InceptionResnetV1 state dict (the vggface2 weights cannot be
    downloaded here), saved the way the release file is, with a `logits.*` classifier the
    embedder must drop. Good for shapes and runtime parity, never for accuracy."""
    import torch
    from facenet_pytorch import InceptionResnetV1

    torch.manual_seed(0)
    state = InceptionResnetV1(pretrained=None).state_dict()
    state["logits.weight"] = torch.zeros(8631, 512)
    state["logits.bias"] = torch.zeros(8631)
    path = tmp_path_factory.mktemp("weights") / "20180402-114759-vggface2.pt"
    torch.save(state, path)
    return path


@pytest.fixture(scope="session")
def onnx_models(random_facenet_weights: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every network exported to ONNX (facenet's with the random weights above)."""
    from lambda_image.export import export_models

    out = tmp_path_factory.mktemp("onnx") / "models"
    export_models(out, facenet_weights=random_facenet_weights)
    return out


@pytest.fixture(scope="session")
def onnx_models_dlib_only(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An export without facenet weights: what an image built without them carries."""
    from lambda_image.export import export_models

    out = tmp_path_factory.mktemp("onnx-dlib") / "models"
    export_models(out)
    return out


@pytest.fixture(scope="session")
def onnx_recognizer(course_gallery: Path, onnx_models: Path) -> Recognizer:
    """The dlib pipeline over the course gallery on the onnx runtime."""
    return Recognizer.from_settings(FunctionSettings(gallery_path=course_gallery,
                                                     inference_runtime="onnx",
                                                     model_dir=onnx_models))


@pytest.fixture(scope="session")
def photos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from sampledata.photos import fetch_photos

    return fetch_photos()


@pytest.fixture(scope="session")
def clips(photos: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Short clips rendered from real photos: strangers, two gallery people, no face at all."""
    from sampledata.render import render_faceless_clip, render_still_clip

    root = tmp_path_factory.mktemp("clips")
    return {
        "grace_hopper": render_still_clip(root / "grace_hopper.mp4", [photos["grace_hopper"]],
                                          seconds=0.5),
        "astronaut": render_still_clip(root / "astronaut.mp4", [photos["astronaut"]], seconds=0.5),
        "two_presidents": render_still_clip(root / "two presidents.mp4",
                                            [photos["obama"], photos["biden"]],
                                            size=(960, 480), seconds=0.5),
        "faceless": render_faceless_clip(root / "faceless.mp4", seconds=0.5),
    }


@dataclass
class Cloud:
    """Resources on the moto server plus the handler's runtime wired to them."""

    session: boto3.session.Session
    input_bucket: str
    output_bucket: str
    output_queue_url: str
    response_queue_url: str
    table: str
    runtime: handlers.Runtime
    request_queue_url: str = ""
    frames_bucket: str = "frames-bucket"

    def put(self, key: str, body: bytes) -> dict[str, Any]:
        """Upload an object; return the S3 record an event notification would carry."""
        s3 = self.session.client("s3")
        response = s3.put_object(Bucket=self.input_bucket, Key=key, Body=body)
        from urllib.parse import quote_plus

        return {"eventName": "ObjectCreated:Put",
                "s3": {"bucket": {"name": self.input_bucket},
                       "object": {"key": quote_plus(key, safe="/"),
                                  "eTag": response["ETag"].strip('"'), "size": len(body)}}}

    def messages(self, queue_url: str | None = None) -> list[str]:
        sqs = self.session.client("sqs")
        bodies: list[str] = []
        while True:
            got = sqs.receive_message(QueueUrl=queue_url or self.output_queue_url,
                                      MaxNumberOfMessages=10, WaitTimeSeconds=0)
            if not got.get("Messages"):
                return bodies
            for m in got["Messages"]:
                bodies.append(m["Body"])
                sqs.delete_message(QueueUrl=queue_url or self.output_queue_url,
                                   ReceiptHandle=m["ReceiptHandle"])

    def csv_object(self, key: str) -> str:
        s3 = self.session.client("s3")
        return s3.get_object(Bucket=self.output_bucket, Key=key)["Body"].read().decode()


@pytest.fixture()
def cloud(boto_session: boto3.session.Session, recognizer: Recognizer, course_data: Path,
          course_gallery: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Cloud]:
    """Buckets, queues and the seeded students table on moto; the handler uses them."""
    import json

    s3, sqs, ddb = (boto_session.client(n) for n in ("s3", "sqs", "dynamodb"))
    for bucket in ("in-bucket", "out-bucket", "frames-bucket"):
        s3.create_bucket(Bucket=bucket)
    out_q = sqs.create_queue(QueueName="results")["QueueUrl"]
    resp_q = sqs.create_queue(QueueName="responses")["QueueUrl"]
    req_q = sqs.create_queue(QueueName="requests")["QueueUrl"]
    ddb.create_table(TableName="students", BillingMode="PAY_PER_REQUEST",
                     KeySchema=[{"AttributeName": "name", "KeyType": "HASH"}],
                     AttributeDefinitions=[{"AttributeName": "name", "AttributeType": "S"}])
    for record in json.loads((course_data / "student_data.json").read_text()):
        ddb.put_item(TableName="students", Item={"name": {"S": record["name"]},
                                                 "major": {"S": record["major"]},
                                                 "year": {"S": record["year"]},
                                                 "id": {"N": str(record["id"])}})
    ddb.create_table(TableName="camera-tracks", BillingMode="PAY_PER_REQUEST",
                     KeySchema=[{"AttributeName": "camera_id", "KeyType": "HASH"},
                                {"AttributeName": "sequence", "KeyType": "RANGE"}],
                     AttributeDefinitions=[{"AttributeName": "camera_id", "AttributeType": "S"},
                                           {"AttributeName": "sequence", "AttributeType": "N"}])
    settings = FunctionSettings(gallery_path=course_gallery, students_table="students",
                                output_bucket="out-bucket", output_queue_url=out_q,
                                response_queue_url=resp_q, request_queue_url=req_q,
                                frames_bucket="frames-bucket", camera_tracks_table="camera-tracks")
    runtime = handlers.Runtime(settings=settings, recognizer=recognizer,
                               s3=boto_session.client("s3"), sqs=boto_session.client("sqs"),
                               records=StudentRecords(boto_session.client("dynamodb"), "students"),
                               tracks=CameraTracks(boto_session.client("dynamodb"),
                                                   "camera-tracks"))
    monkeypatch.setattr(handlers, "_runtime", runtime)
    yield Cloud(boto_session, "in-bucket", "out-bucket", out_q, resp_q, "students", runtime,
                request_queue_url=req_q)
