"""lambda_image.mtcnn against facenet-pytorch's MTCNN (the reference, imported only here), and the
cold-start promise: the function never imports facenet_pytorch or torchvision for a dlib gallery."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lambda_image.config import FunctionSettings
from lambda_image.mtcnn import MTCNN, weights_dir
from lambda_image.mtcnn_numpy import nms
from lambda_image.video import sample_frames

REPO = Path(__file__).resolve().parents[2]
CLIPS = ["test_0.mp4", "test_1.mp4", "test_2.mp4", "test_4.mp4", "test_5.mp4", "test_6.mp4",
         "test_7.mp4", "test_8.mp4"]
SETTINGS = FunctionSettings()


@pytest.fixture(scope="module")
def ours() -> MTCNN:
    return MTCNN(min_face_size=SETTINGS.min_face_px, factor=SETTINGS.detect_factor)


@pytest.fixture(scope="module")
def reference():
    from facenet_pytorch import MTCNN as FacenetMTCNN

    return FacenetMTCNN(keep_all=True, min_face_size=SETTINGS.min_face_px,
                        factor=SETTINGS.detect_factor, post_process=False, device="cpu")


def _by_area(boxes: np.ndarray, *arrays: np.ndarray) -> list[np.ndarray]:
    order = np.argsort(-(boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]), kind="stable")
    return [boxes[order], *(a[order] for a in arrays)]


def _assert_same_detections(ours: MTCNN, reference, image) -> int:
    boxes, points = ours.detect(image)
    ref_boxes, ref_probs, ref_points = reference.detect(image, landmarks=True)
    if ref_boxes is None:
        assert len(boxes) == 0
        return 0
    ref_boxes = np.asarray(ref_boxes, dtype=np.float64)
    ref_probs = np.asarray(ref_probs, dtype=np.float64)
    ref_points = np.asarray(ref_points, dtype=np.float64)
    boxes, points = _by_area(boxes.astype(np.float64), points.astype(np.float64))
    ref_boxes, ref_probs, ref_points = _by_area(ref_boxes, ref_probs, ref_points)
    assert boxes.shape == (len(ref_boxes), 5)
    np.testing.assert_allclose(boxes[:, :4], ref_boxes, atol=1.0)  # pixels
    np.testing.assert_allclose(boxes[:, 4], ref_probs, atol=1e-4)
    np.testing.assert_allclose(points, ref_points, atol=1.0)
    return len(boxes)


@pytest.mark.parametrize("clip", CLIPS)
def test_boxes_probs_landmarks_match_facenet_on_course_clips(ours: MTCNN, reference,
                                                              course_data: Path, clip: str) -> None:
    frame = next(sample_frames(course_data / "videos" / clip,
                               detect_max_side=SETTINGS.detect_max_side))

    assert _assert_same_detections(ours, reference, frame.small) >= 1


@pytest.mark.parametrize("who", ["two_presidents", "grace_hopper", "faceless"])
def test_detections_match_facenet_on_rendered_clips(ours: MTCNN, reference, clips: dict,
                                                     who: str) -> None:
    frame = next(sample_frames(clips[who], detect_max_side=SETTINGS.detect_max_side))

    found = _assert_same_detections(ours, reference, frame.small)

    assert found == {"two_presidents": 2, "grace_hopper": 1, "faceless": 0}[who]


def test_union_nms_is_torchvisions_nms() -> None:
    import torch
    from torchvision.ops import nms as tv_nms

    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 100, (300, 2)).astype(np.float32)
    wh = rng.uniform(5, 40, (300, 2)).astype(np.float32)
    boxes = np.concatenate([xy, xy + wh], axis=1)
    scores = rng.uniform(0, 1, 300).astype(np.float32)
    for threshold in (0.3, 0.5, 0.7):
        want = tv_nms(torch.from_numpy(boxes), torch.from_numpy(scores), threshold).numpy()
        assert nms(boxes, scores, threshold).tolist() == want.tolist()


def test_min_nms_uses_smaller_area() -> None:
    boxes = np.array([[0, 0, 99, 99], [10, 10, 29, 29], [200, 200, 219, 219]], dtype=np.float32)
    scores = np.array([0.9, 0.8, 0.7], dtype=np.float32)

    assert nms(boxes, scores, 0.7, "Min").tolist() == [0, 2]  # the inner box lies fully inside
    assert nms(boxes, scores, 0.7, "Union").tolist() == [0, 1, 2]


def test_weights_found_without_importing_facenet() -> None:
    code = ("import sys; from lambda_image.mtcnn import weights_dir; d = weights_dir(); "
            "print(sorted(p.name for p in d.glob('*net.pt')), 'facenet_pytorch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                         check=True).stdout

    assert out.strip() == "['onet.pt', 'pnet.pt', 'rnet.pt'] False"
    assert (weights_dir() / "pnet.pt").is_file()


def test_function_cold_path_imports_neither_facenet_nor_torchvision(course_data: Path) -> None:
    """The Lambda init phase (import with GALLERY_PATH set builds the Runtime) and one clip."""
    code = f"""
import json, sys
from lambda_image import handlers
rt = handlers.runtime()
result = rt.recognizer.recognize({str(course_data / "videos" / "test_0.mp4")!r})
print(json.dumps({{"names": result.names,
                  "loaded": [m for m in ("facenet_pytorch", "torchvision") if m in sys.modules]}}))
"""
    env = {**os.environ, "GALLERY_PATH": str(course_data / "encoding"),
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_ACCESS_KEY_ID": "x",
           "AWS_SECRET_ACCESS_KEY": "x", "TORCH_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True,
                          text=True, check=True, timeout=120)

    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["names"] == ["president_trump"]
    assert report["loaded"] == []
