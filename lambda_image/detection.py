"""Face detection with MTCNN: facenet-pytorch's networks and weights, run either by
lambda_image.mtcnn in torch (without importing facenet_pytorch or torchvision: cold start), or by
lambda_image.mtcnn_numpy on the exported ONNX networks (no torch at all)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image


@dataclass(frozen=True)
class Detection:
    """A face in full-resolution pixel coordinates."""

    box: tuple[float, float, float, float]  # x1, y1, x2, y2
    prob: float
    landmarks: np.ndarray  # (5, 2): eyes, nose, mouth corners

    @property
    def width(self) -> float:
        return self.box[2] - self.box[0]

    @property
    def area(self) -> float:
        return max(0.0, self.box[2] - self.box[0]) * max(0.0, self.box[3] - self.box[1])


class FaceDetector:
    """Every face in a (downscaled) frame, mapped back to full-resolution coordinates."""

    def __init__(self, *, min_face_px: int = 24, min_prob: float = 0.9,
                 thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7),
                 factor: float = 0.709, runtime: str = "torch", model_dir: Path | None = None,
                 threads: int = 1) -> None:
        self.min_prob = min_prob
        self.runtime = runtime
        if runtime == "onnx":
            from lambda_image import onnx_models as files
            from lambda_image.mtcnn_numpy import NumpyMTCNN

            if model_dir is None:
                raise ValueError("the onnx detector needs the exported model directory")
            models = files.ModelDir(model_dir)
            nets = (files.OnnxNet(models.file(name), threads=threads)
                    for name in (files.PNET, files.RNET, files.ONET))
            self._mtcnn = NumpyMTCNN(*nets, min_face_size=min_face_px, thresholds=thresholds,
                                     factor=factor)
        elif runtime == "torch":
            from lambda_image.mtcnn import MTCNN  # imports torch: only when a detector is built

            self._mtcnn = MTCNN(min_face_size=min_face_px, thresholds=thresholds, factor=factor)
        else:
            raise ValueError(f"unknown inference runtime {runtime!r}")

    def detect(self, image: Image.Image | np.ndarray, *, scale: float = 1.0) -> list[Detection]:
        """Faces in `image`; `scale` is image size / full-resolution size (boxes are divided by it).

        Sorted by area, largest first.
        """
        boxes, points = self._mtcnn.detect(image)
        found = []
        for box, lms in zip(boxes, points, strict=True):
            prob = float(box[4])
            if prob < self.min_prob:
                continue
            b = np.asarray(box[:4], dtype=np.float64) / scale
            found.append(Detection(box=(float(b[0]), float(b[1]), float(b[2]), float(b[3])),
                                   prob=prob,
                                   landmarks=np.asarray(lms, dtype=np.float64).reshape(5, 2) / scale))
        found.sort(key=lambda d: d.area, reverse=True)
        return found
