"""The exported model directory and the onnxruntime sessions that run it (no torch at run time).

`python -m lambda_image export-onnx --out DIR` (lambda_image.export, with torch) writes DIR:

    mtcnn_pnet.onnx, mtcnn_rnet.onnx, mtcnn_onet.onnx    MTCNN (facenet-pytorch's weights)
    dlib_resnet.onnx                                      dlib's face-recognition ResNet (our port)
    facenet_vggface2.onnx                                 InceptionResnetV1, only when weights were given
    shape_predictor_5_face_landmarks.dat                  dlib's 5-point predictor (alignment)
    dlib-<version>-frontal_face_detector.svm              dlib's HOG detector, saved (re-detection)
    manifest.json                                         what is there, with sizes and hashes

The function on `INFERENCE_RUNTIME=onnx` reads only this directory (`MODEL_DIR`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lambda_image.errors import WeightsError

PNET = "mtcnn_pnet.onnx"
RNET = "mtcnn_rnet.onnx"
ONET = "mtcnn_onet.onnx"
DLIB_RESNET = "dlib_resnet.onnx"
FACENET = "facenet_vggface2.onnx"
PREDICTOR_5 = "shape_predictor_5_face_landmarks.dat"
MANIFEST = "manifest.json"


@dataclass(frozen=True)
class ModelDir:
    """An exported model directory (see the module docstring)."""

    path: Path

    def file(self, name: str) -> Path:
        """The path of *name* in it; WeightsError (a ConfigError: an init failure) if absent."""
        path = self.path / name
        if not path.is_file():
            hint = (" (this model directory was exported without facenet weights: it serves "
                    "dlib galleries only)" if name == FACENET else "")
            raise WeightsError(f"model file {name} not found in {self.path}{hint}")
        return path

    def has(self, name: str) -> bool:
        return (self.path / name).is_file()

    def manifest(self) -> dict[str, Any]:
        try:
            return json.loads((self.path / MANIFEST).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise WeightsError(f"no readable {MANIFEST} in {self.path}: {exc}") from exc


def session(path: Path, threads: int = 1) -> Any:
    """An onnxruntime CPU session with *threads* intra-op threads and nothing running beside it
    (one inter-op thread, sequential execution, no spinning: the function runs one call at a time
    and shares its cores)."""
    # onnxruntime's telemetry (Microsoft's 1DS client) is on by default: it writes a session
    # file into $TMPDIR at import and would send events out. The function sends nothing but its
    # results, so it is off before the import (the image's ENV says so too).
    os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3  # warnings about unused initialisers are noise here
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph types
        raise WeightsError(f"cannot load ONNX model {path}: {exc}") from exc


class OnnxNet:
    """One exported network as a callable: its single input in, its outputs (in order) out."""

    def __init__(self, path: Path, *, threads: int = 1) -> None:
        self.path = path
        self._session = session(path, threads)
        self._input = self._session.get_inputs()[0].name

    def __call__(self, x: np.ndarray) -> Sequence[np.ndarray]:
        return self._session.run(None, {self._input: np.ascontiguousarray(x, dtype=np.float32)})


class OnnxFaceEncoder:
    """dlib's ResNet from dlib_resnet.onnx: (n, 150, 150, 3) uint8 RGB chips from
    `dlib.get_face_chips` → (n, 128) float32 descriptors (the TorchFaceEncoder's contract)."""

    size = 150

    def __init__(self, path: Path, *, threads: int = 1) -> None:
        self._net = OnnxNet(path, threads=threads)

    def __call__(self, chips: list[np.ndarray] | np.ndarray) -> np.ndarray:
        batch = np.asarray(chips, dtype=np.uint8)
        if batch.ndim != 4 or batch.shape[1:] != (self.size, self.size, 3):
            raise ValueError(f"expected (n, {self.size}, {self.size}, 3) RGB chips, "
                             f"got {batch.shape}")
        return np.asarray(self._net(batch.astype(np.float32))[0], dtype=np.float32)
