"""Face detection with facenet-pytorch's MTCNN (weights ship inside the wheel)."""

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
                 thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7)) -> None:
        from facenet_pytorch import MTCNN  # heavy import: only when a detector is built

        self.min_prob = min_prob
        self._mtcnn = MTCNN(keep_all=True, min_face_size=min_face_px, thresholds=list(thresholds),
                            post_process=False, device="cpu")

    def detect(self, image: Image.Image, *, scale: float = 1.0) -> list[Detection]:
        """Faces in `image`; `scale` is image size / full-resolution size (boxes are divided by it).

        Sorted by area, largest first. MTCNN.detect returns None or (sometimes dtype=object) arrays.
        """
        boxes, probs, points = self._mtcnn.detect(image, landmarks=True)
        if boxes is None:
            return []
        found = []
        for box, prob, lms in zip(boxes, probs, points, strict=True):
            if box is None or prob is None or float(prob) < self.min_prob:
                continue
            b = np.asarray(box, dtype=np.float64) / scale
            found.append(Detection(box=(float(b[0]), float(b[1]), float(b[2]), float(b[3])),
                                   prob=float(prob),
                                   landmarks=np.asarray(lms, dtype=np.float64).reshape(5, 2) / scale))
        found.sort(key=lambda d: d.area, reverse=True)
        return found
