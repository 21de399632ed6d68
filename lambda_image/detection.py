"""Face detection with MTCNN: facenet-pytorch's networks and weights (shipped in its wheel), run by
lambda_image.mtcnn without importing facenet_pytorch or torchvision (cold start)."""

from __future__ import annotations

from dataclasses import dataclass

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
                 factor: float = 0.709) -> None:
        from lambda_image.mtcnn import MTCNN  # imports torch: only when a detector is built

        self.min_prob = min_prob
        self._mtcnn = MTCNN(min_face_size=min_face_px, thresholds=thresholds, factor=factor)

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
