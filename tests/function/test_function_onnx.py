"""The ONNX runtime against the torch path it was exported from, on real data: MTCNN boxes and
landmarks within 0.01 px, dlib descriptors (real weights) within 1e-4, facenet embeddings
(RANDOMLY INITIALISED weights: the vggface2 file cannot be had here) within 1e-4, the course clips
with the same answers and distances; and the onnx function in a fresh process never imports
torch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lambda_image import onnx_models as files
from lambda_image.config import FunctionSettings
from lambda_image.embedders import FacenetEmbedder, facenet_crops
from lambda_image.errors import ConfigError, WeightsError
from lambda_image.recognize import Recognizer
from lambda_image.video import sample_frames

REPO = Path(__file__).resolve().parents[2]
CLIPS = ["test_0.mp4", "test_1.mp4", "test_2.mp4", "test_4.mp4", "test_5.mp4", "test_6.mp4",
         "test_7.mp4", "test_8.mp4"]
BOX_TOLERANCE_PX = 0.01
DESCRIPTOR_TOLERANCE = 1e-4


def _frames(path: Path, n: int = 3):
    return list(sample_frames(path, max_frames=n))


def _assert_same_raw_detections(torch_rec: Recognizer, onnx_rec: Recognizer, image) -> int:
    want_boxes, want_points = torch_rec.detector._mtcnn.detect(image)
    got_boxes, got_points = onnx_rec.detector._mtcnn.detect(image)
    assert got_boxes.shape == want_boxes.shape
    if len(want_boxes):
        assert np.abs(got_boxes[:, :4] - want_boxes[:, :4]).max() <= BOX_TOLERANCE_PX
        assert np.abs(got_boxes[:, 4] - want_boxes[:, 4]).max() <= 1e-5
        assert np.abs(got_points - want_points).max() <= BOX_TOLERANCE_PX
    return len(want_boxes)


@pytest.mark.parametrize("clip", CLIPS)
def test_mtcnn_on_onnx_finds_the_torch_paths_boxes_and_landmarks_on_course_clips(
        recognizer: Recognizer, onnx_recognizer: Recognizer, course_data: Path,
        clip: str) -> None:
    found = [_assert_same_raw_detections(recognizer, onnx_recognizer, frame.small)
             for frame in _frames(course_data / "videos" / clip)]

    assert found[0] >= 1


@pytest.mark.parametrize("who,faces", [("two_presidents", 2), ("grace_hopper", 1),
                                       ("faceless", 0)])
def test_mtcnn_on_onnx_matches_torch_on_rendered_clips(recognizer: Recognizer,
                                                       onnx_recognizer: Recognizer, clips: dict,
                                                       who: str, faces: int) -> None:
    frame = _frames(clips[who], 1)[0]

    assert _assert_same_raw_detections(recognizer, onnx_recognizer, frame.small) == faces


@pytest.mark.parametrize("clip", CLIPS)
def test_dlib_descriptors_on_onnx_match_torch_with_real_weights(
        recognizer: Recognizer, onnx_recognizer: Recognizer, course_data: Path,
        clip: str) -> None:
    for frame in _frames(course_data / "videos" / clip):
        faces = recognizer.detector.detect(frame.small, scale=frame.scale)
        if not faces:
            continue
        chips = recognizer.embedder.chips(frame.rgb, faces)
        assert np.array_equal(np.asarray(chips), np.asarray(onnx_recognizer.embedder.chips(
            frame.rgb, faces))), "both align with the same dlib files"
        want = recognizer.embedder._encode(chips)
        got = onnx_recognizer.embedder._encode(chips)
        assert got.shape == want.shape == (len(faces), 128) and got.dtype == np.float32
        assert np.abs(got - want).max() < DESCRIPTOR_TOLERANCE


def test_dlib_onnx_encoder_batches_like_one_at_a_time(onnx_recognizer: Recognizer) -> None:
    rng = np.random.default_rng(1)
    chips = rng.integers(0, 256, (3, 150, 150, 3), dtype=np.uint8)
    encode = onnx_recognizer.embedder._encode

    batch = encode(chips)

    for i in range(3):
        assert np.abs(encode(chips[i:i + 1])[0] - batch[i]).max() < 1e-5
    with pytest.raises(ValueError, match="RGB chips"):
        encode(chips[:, :100])


def test_facenet_crops_equal_facenet_pytorch_extract_face(recognizer: Recognizer,
                                                          photos: dict) -> None:
    from facenet_pytorch.models.mtcnn import extract_face, fixed_image_standardization

    image = Image.open(photos["obama"]).convert("RGB")
    faces = recognizer.detector.detect(image)
    want = np.stack([fixed_image_standardization(extract_face(image, np.asarray(f.box), 160))
                     .numpy() for f in faces])

    assert np.array_equal(facenet_crops(np.asarray(image), faces), want)


def test_facenet_on_onnx_matches_torch_with_random_weights(
        recognizer: Recognizer, random_facenet_weights: Path, onnx_models: Path,
        course_data: Path, photos: dict) -> None:
    torch_net = FacenetEmbedder(random_facenet_weights)
    onnx_net = FacenetEmbedder(runtime="onnx", model_dir=onnx_models)
    images = [np.asarray(Image.open(photos[p]).convert("RGB")) for p in ("obama", "biden")]
    images += [_frames(course_data / "videos" / c, 1)[0].rgb for c in ("test_1.mp4", "test_5.mp4")]
    compared = 0
    for rgb in images:
        faces = recognizer.detector.detect(Image.fromarray(rgb))
        want, got = torch_net.embed(rgb, faces), onnx_net.embed(rgb, faces)
        assert got.shape == want.shape == (len(faces), 512)
        assert np.abs(got - want).max() < DESCRIPTOR_TOLERANCE
        compared += len(faces)
    assert compared >= 5


def test_facenet_gallery_on_onnx_runs_with_random_weights(shared_data: Path, course_data: Path,
                                                          onnx_models: Path) -> None:
    settings = FunctionSettings(gallery_path=shared_data / "cse546-2025" / "data.pt",
                                inference_runtime="onnx", model_dir=onnx_models)
    result = Recognizer.from_settings(settings).recognize(course_data / "videos" / "test_4.mp4")

    assert result.embedder == "facenet" and result.faces  # names mean nothing: random weights


def test_facenet_gallery_without_a_facenet_export_says_dlib_only(
        shared_data: Path, onnx_models_dlib_only: Path) -> None:
    settings = FunctionSettings(gallery_path=shared_data / "cse546-2025" / "data.pt",
                                inference_runtime="onnx", model_dir=onnx_models_dlib_only)
    with pytest.raises(WeightsError, match="dlib galleries only"):
        Recognizer.from_settings(settings)


@pytest.mark.parametrize("clip", CLIPS)
def test_course_clips_give_the_same_answers_and_distances_on_both_runtimes(
        recognizer: Recognizer, onnx_recognizer: Recognizer, course_data: Path, expected: dict,
        clip: str) -> None:
    want = recognizer.recognize(course_data / "videos" / clip)
    got = onnx_recognizer.recognize(course_data / "videos" / clip)

    assert got.names[0] == want.names[0] == expected[clip]["name"]
    assert got.names == want.names  # test_5's unenrolled bystander stays unknown on both
    assert (got.frames_sampled, got.extra_frames) == (want.frames_sampled, want.extra_frames)
    assert len(got.faces) == len(want.faces)
    for g, w in zip(got.faces, want.faces, strict=True):
        assert (g.name, g.nearest, g.decision, g.frames) == (w.name, w.nearest, w.decision,
                                                             w.frames)
        assert round(g.distance, 3) == round(w.distance, 3)
        assert abs(g.distance - w.distance) < 1e-4
        assert g.box == w.box


def test_borderline_confirmation_works_on_onnx(onnx_recognizer: Recognizer,
                                               course_data: Path) -> None:
    # test_6's floki (0.567, 0.745 of his identity's spacing) is named on his first frame ...
    result = onnx_recognizer.recognize(course_data / "videos" / "test_6.mp4")
    (face,) = result.faces
    assert (face.name, face.decision, result.extra_frames) == ("floki", "confident", 0)
    # ... and under a stricter rule (0.70 of the spacing) he is borderline, confirmed on the next
    strict = Recognizer(onnx_recognizer.gallery, detector=onnx_recognizer.detector,
                        embedder=onnx_recognizer.embedder, confirm_fraction=0.70)
    result = strict.recognize(course_data / "videos" / "test_6.mp4")
    (face,) = result.faces

    assert (face.name, face.decision, result.extra_frames) == ("floki", "confirmed", 1)


def test_export_holds_only_what_the_onnx_path_runs(onnx_models: Path,
                                                   onnx_models_dlib_only: Path) -> None:
    listed = json.loads((onnx_models_dlib_only / files.MANIFEST).read_text())

    names = sorted(p.name for p in onnx_models_dlib_only.iterdir())
    assert names == sorted([*listed["files"], "manifest.json"])
    assert {files.PNET, files.RNET, files.ONET,
            files.DLIB_RESNET, files.PREDICTOR_5} <= set(names)
    assert listed["facenet"] is None and files.FACENET not in names
    assert len(names) == 7, names  # + the saved HOG detector and the manifest
    total = sum(p.stat().st_size for p in onnx_models_dlib_only.iterdir())
    assert total < 40 * 2**20, "not face_recognition_models' 126 MB"
    assert json.loads((onnx_models / "manifest.json").read_text())["facenet"] == \
        files.FACENET


def test_threads_reach_onnxruntime(onnx_models: Path) -> None:
    net = files.OnnxNet(onnx_models / files.RNET, threads=2)

    assert net._session.get_session_options().intra_op_num_threads == 2


def test_runtime_settings() -> None:
    assert FunctionSettings.from_env({}).inference_runtime == "torch"
    onnx = FunctionSettings.from_env({"INFERENCE_RUNTIME": "ONNX", "MODEL_DIR": "/models",
                                      "INFERENCE_THREADS": "2", "TORCH_NUM_THREADS": "3"})
    assert (onnx.inference_runtime, onnx.model_dir, onnx.inference_threads) == \
        ("onnx", Path("/models"), 2)
    assert FunctionSettings.from_env({"TORCH_NUM_THREADS": "3"}).inference_threads == 3
    with pytest.raises(ConfigError, match="MODEL_DIR"):
        FunctionSettings.from_env({"INFERENCE_RUNTIME": "onnx"})
    with pytest.raises(ConfigError, match="INFERENCE_RUNTIME"):
        FunctionSettings.from_env({"INFERENCE_RUNTIME": "tensorflow"})
    with pytest.raises(ConfigError, match="MODEL_DIR"):
        Recognizer.from_settings(FunctionSettings(gallery_path=Path("/g"),
                                                  inference_runtime="onnx"))


def test_log_lines_are_json_under_a_lambda_runtime() -> None:
    assert FunctionSettings.from_env({"AWS_LAMBDA_RUNTIME_API": "127.0.0.1:9001"}).log_json
    assert not FunctionSettings.from_env({}).log_json
    assert FunctionSettings.from_env({"LOG_FORMAT": "json"}).log_json
    with pytest.raises(ConfigError, match="LOG_FORMAT"):
        FunctionSettings.from_env({"LOG_FORMAT": "xml"})


def test_missing_model_file_is_a_weights_error(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="mtcnn_pnet.onnx not found"):
        files.ModelDir(tmp_path).file(files.PNET)
    (tmp_path / files.PNET).write_bytes(b"not onnx")
    with pytest.raises(WeightsError, match="cannot load ONNX model"):
        files.OnnxNet(tmp_path / files.PNET)


HEAVY = ("torch", "torchvision", "facenet_pytorch", "face_recognition_models")


def test_onnx_function_never_imports_torch_in_a_fresh_process(
        onnx_models_dlib_only: Path, course_data: Path, aws_env: str, boto_session,
        tmp_path: Path) -> None:
    # GIVEN the function configured as the image configures it (onnx, the dlib-only export),
    # a course clip in S3 and the output bucket and queue
    s3, sqs = boto_session.client("s3"), boto_session.client("sqs")
    for bucket in ("in-bucket", "out-bucket"):
        s3.create_bucket(Bucket=bucket)
    queue = sqs.create_queue(QueueName="results")["QueueUrl"]
    ddb = boto_session.client("dynamodb")
    ddb.create_table(TableName="students", BillingMode="PAY_PER_REQUEST",
                     KeySchema=[{"AttributeName": "name", "KeyType": "HASH"}],
                     AttributeDefinitions=[{"AttributeName": "name", "AttributeType": "S"}])
    ddb.put_item(TableName="students", Item={"name": {"S": "morgan_freeman"},
                                             "major": {"S": "m"}, "year": {"S": "y"}})
    s3.upload_file(str(course_data / "videos" / "test_7.mp4"), "in-bucket", "test_7.mp4")
    event = {"Records": [{"eventName": "ObjectCreated:Put", "s3": {
        "bucket": {"name": "in-bucket"}, "object": {"key": "test_7.mp4"}}}]}
    code = f"""
import json, sys
from lambda_image import handlers
answer = handlers.s3_handler({event!r}, None)
print(json.dumps({{"answer": answer,
                  "loaded": sorted({{m.split(".")[0] for m in sys.modules}} & {set(HEAVY)!r})}}))
"""
    env = {**os.environ, "GALLERY_PATH": str(course_data / "encoding"),
           "INFERENCE_RUNTIME": "onnx", "MODEL_DIR": str(onnx_models_dlib_only),
           "OUTPUT_BUCKET": "out-bucket", "OUTPUT_QUEUE_URL": queue, "STUDENTS_TABLE": "students",
           "HOME": str(tmp_path)}
    # WHEN a fresh process runs Lambda's init (the import) and handles the clip
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    # THEN it answered with the person, and none of torch, its packages or dlib's 126 MB of
    # model files was ever imported; the init line says this export serves dlib galleries only
    (result,) = report["answer"]["results"]
    assert result["status"] == "ok" and result["people"][0]["name"] == "morgan_freeman"
    assert report["loaded"] == []
    assert "function.dlib_only" in proc.stdout and "function.init" in proc.stdout
