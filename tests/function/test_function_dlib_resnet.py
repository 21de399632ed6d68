"""dlib's face-recognition ResNet run in torch (lambda_image.dlib_resnet) against dlib itself.

The reference is dlib's own `face_recognition_model_v1.compute_face_descriptor` on the chips the
pipeline aligns from the course clips' first frames (the course gallery's space).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lambda_image.config import FunctionSettings
from lambda_image.dlib_resnet import TorchFaceEncoder, read_dlib_net
from lambda_image.embedders import DlibEmbedder
from lambda_image.errors import ConfigError, WeightsError
from lambda_image.recognize import Recognizer
from lambda_image.video import sample_frames

CLIPS = ["test_0.mp4", "test_1.mp4", "test_2.mp4", "test_4.mp4", "test_5.mp4", "test_6.mp4",
         "test_7.mp4", "test_8.mp4"]


@pytest.fixture(scope="module")
def model_path() -> str:
    import face_recognition_models as models

    return models.face_recognition_model_location()


@pytest.fixture(scope="module")
def reference(model_path: str):
    import dlib

    return dlib.face_recognition_model_v1(model_path)


@pytest.fixture(scope="module")
def torch_encoder(model_path: str) -> TorchFaceEncoder:
    return TorchFaceEncoder(model_path)


def _first_frame(path: Path):
    return next(sample_frames(path, max_frames=1))


@pytest.mark.parametrize("clip", CLIPS)
def test_torch_descriptor_matches_dlib(recognizer: Recognizer, reference,
                                       torch_encoder: TorchFaceEncoder, course_data: Path,
                                       clip: str) -> None:
    embedder = recognizer.embedder
    assert isinstance(embedder, DlibEmbedder) and embedder.encoder == "torch"
    frame = _first_frame(course_data / "videos" / clip)
    faces = recognizer.detector.detect(frame.small, scale=frame.scale)
    assert faces
    shapes = embedder.shapes(frame.rgb, faces)
    chips = embedder.chips(frame.rgb, faces)

    want = np.asarray([np.asarray(v) for v in reference.compute_face_descriptor(chips)])
    got = torch_encoder(chips)
    # dlib's whole-image API crops the same chips (get_face_chip_details(shape, 150, 0.25)).
    whole = np.asarray([np.asarray(v) for v in
                        reference.compute_face_descriptor(frame.rgb, shapes)])

    assert got.shape == (len(faces), 128) and got.dtype == np.float32
    assert np.abs(whole - want).max() < 1e-6
    assert np.abs(got - want).max() < 1e-3
    assert np.allclose(np.asarray(embedder.embed(frame.rgb, faces)), got, atol=1e-6)
    rows = recognizer.gallery.embeddings.astype(np.float64)
    d_want = np.linalg.norm(rows[None] - want[:, None], axis=2)
    d_got = np.linalg.norm(rows[None] - got[:, None].astype(np.float64), axis=2)
    assert np.abs(d_got - d_want).max() < 1e-3


def test_descriptors_are_raw_fc_outputs_in_a_batch(torch_encoder: TorchFaceEncoder,
                                                   reference) -> None:
    rng = np.random.default_rng(0)
    chips = [rng.integers(0, 256, (150, 150, 3), dtype=np.uint8) for _ in range(3)]

    got = torch_encoder(chips)
    want = np.asarray([np.asarray(v) for v in reference.compute_face_descriptor(chips)])

    assert np.abs(got - want).max() < 1e-3
    assert not np.allclose(np.linalg.norm(got, axis=1), 1.0)  # dlib does not normalise
    assert np.abs(torch_encoder(chips[1:2])[0] - got[1]).max() < 1e-5  # batching changes nothing


def test_parsed_network_has_dlibs_architecture(model_path: str) -> None:
    net = read_dlib_net(model_path)
    kinds = [layer.kind for layer in net.layers]

    assert net.size == 150
    assert np.allclose(net.mean_rgb, (122.782, 117.001, 104.298), atol=1e-4)
    assert kinds.count("con") == 29 and kinds.count("add_prev") == 14 and kinds[-1] == "fc"
    assert net.layers[0].params["weight"].shape == (32, 3, 7, 7)
    assert net.layers[0].params["padding"] == (0, 0)  # dlib pads strided convs by 0
    assert net.layers[-1].params["weight"].shape == (256, 128)


def test_not_a_dlib_network_is_a_weights_error(tmp_path: Path, model_path: str) -> None:
    bad = tmp_path / "bad.dat"
    bad.write_bytes(b"\x01\x01\x01\x05hello")
    with pytest.raises(WeightsError):
        read_dlib_net(bad)
    truncated = tmp_path / "truncated.dat"
    truncated.write_bytes(Path(model_path).read_bytes()[:100_000])
    with pytest.raises(WeightsError):
        read_dlib_net(truncated)


def test_dlib_encoder_setting() -> None:
    assert FunctionSettings.from_env({}).dlib_runner == "torch"
    assert FunctionSettings.from_env({"DLIB_ENCODER": "dlib"}).dlib_runner == "dlib"
    onnx = FunctionSettings.from_env({"INFERENCE_RUNTIME": "onnx", "MODEL_DIR": "/m"})
    assert onnx.dlib_runner == "onnx", "the runtime runs dlib's ResNet unless told otherwise"
    with pytest.raises(ConfigError):
        FunctionSettings.from_env({"DLIB_ENCODER": "cuda"})


def test_dlib_encoder_fallback_gives_same_answer(course_data: Path, course_gallery: Path,
                                                 recognizer: Recognizer) -> None:
    fallback = Recognizer.from_settings(FunctionSettings(gallery_path=course_gallery,
                                                         dlib_encoder="dlib"))
    clip = course_data / "videos" / "test_5.mp4"

    slow, fast = fallback.recognize(clip), recognizer.recognize(clip)

    assert fallback.embedder.encoder == "dlib"
    assert slow.names == fast.names
    assert abs(slow.faces[0].distance - fast.faces[0].distance) < 1e-3


def test_hog_detector_cache_loads_the_same_detector(tmp_path: Path, course_data: Path) -> None:
    import dlib

    from lambda_image.embedders import frontal_face_detector

    frame = _first_frame(course_data / "videos" / "test_7.mp4")
    small = np.ascontiguousarray(np.asarray(frame.small))
    built = dlib.get_frontal_face_detector()

    first = frontal_face_detector(tmp_path)  # builds and saves
    (saved,) = tmp_path.glob("dlib-*-frontal_face_detector.svm")
    loaded = frontal_face_detector(tmp_path)  # loads
    saved.write_bytes(b"garbage")
    rebuilt = frontal_face_detector(tmp_path)  # unreadable: rebuilt and saved again

    want = built.run(small, 1, -0.5)
    assert want[0], "a face to compare on"
    for detector in (first, loaded, rebuilt):
        rects, scores, kinds = detector.run(small, 1, -0.5)
        assert [(r.left(), r.top(), r.right(), r.bottom()) for r in rects] == \
            [(r.left(), r.top(), r.right(), r.bottom()) for r in want[0]]
        assert np.allclose(scores, want[1]) and list(kinds) == list(want[2])
    assert saved.stat().st_size > 1000


def test_unwritable_hog_cache_still_gives_a_detector(tmp_path: Path) -> None:
    from lambda_image.embedders import frontal_face_detector

    blocker = tmp_path / "file"
    blocker.write_text("not a directory")

    assert frontal_face_detector(blocker / "cache") is not None
