"""MTCNN's detection steps in numpy, with the P-/R-/O-Nets as plain callables (onnxruntime
sessions in the function): no torch at run time.

A line-for-line port of lambda_image.mtcnn.MTCNN.detect (itself ported from facenet-pytorch's
detect_face), in float32 like the torch path, so that the two agree to what the networks'
outputs differ by (tests/function/test_function_onnx.py: boxes and landmarks within 0.01 px).
torch's `interpolate(mode="area")` is adaptive average pooling; here it is two small averaging
matrices per resize (rows, then columns), cached by size.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import lru_cache

import numpy as np

#: facenet-pytorch's defaults.
THRESHOLDS = (0.6, 0.7, 0.7)
FACTOR = 0.709

#: A network: NCHW float32 batch in, its outputs (numpy arrays) out, in the torch module's order.
Net = Callable[[np.ndarray], Sequence[np.ndarray]]


def nms(boxes: np.ndarray, scores: np.ndarray, threshold: float, method: str = "Union") -> np.ndarray:
    """Greedy NMS; indices kept, highest score first.

    'Union' reproduces torchvision.ops.nms (areas without +1, float32, suppress IoU > threshold),
    which facenet uses for the P-/R-Net stages; 'Min' reproduces facenet's nms_numpy (areas with
    +1, overlap over the smaller area, keep <= threshold) used after O-Net.
    """
    n = len(boxes)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    if method == "Union":
        boxes = boxes.astype(np.float32, copy=False)
        scores = scores.astype(np.float32, copy=False)
        one = np.float32(0.0)
        order = np.argsort(-scores, kind="stable")
    else:
        one = 1.0
        order = np.argsort(scores, kind="stable")[::-1]
    x1, y1, x2, y2 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    area = (x2 - x1 + one) * (y2 - y1 + one)
    keep = []
    while order.size:
        i = order[0]
        keep.append(i)
        rest = order[1:]
        w = np.maximum(0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]) + one)
        h = np.maximum(0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]) + one)
        inter = w * h
        if method == "Min":
            overlap = inter / np.minimum(area[i], area[rest])
            order = rest[overlap <= threshold]
        else:
            overlap = inter / (area[i] + area[rest] - inter)
            order = rest[~(overlap > threshold)]
    return np.asarray(keep, dtype=np.int64)


@lru_cache(maxsize=512)
def _pool_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in): row i averages inputs [floor(i·n_in/n_out), ceil((i+1)·n_in/n_out)), the
    windows of torch's adaptive average pooling (interpolate's "area" mode)."""
    i = np.arange(n_out)
    start = (i * n_in) // n_out
    end = ((i + 1) * n_in + n_out - 1) // n_out
    cols = np.arange(n_in)
    inside = (cols >= start[:, None]) & (cols < end[:, None])
    matrix = (inside / (end - start)[:, None]).astype(np.float32)
    matrix.setflags(write=False)  # shared by every caller through the cache
    return matrix


def area_resize(chw: np.ndarray, height: int, width: int) -> np.ndarray:
    """A (C, H, W) float32 array resized to (C, height, width) by area averaging."""
    rows = _pool_matrix(chw.shape[1], height)
    cols = _pool_matrix(chw.shape[2], width)
    return rows @ chw @ cols.T


def _proposals(reg: np.ndarray, probs: np.ndarray, scale: float, thresh: float) -> np.ndarray:
    """P-Net output map → candidate boxes [x1, y1, x2, y2, score, reg×4] (generateBoundingBox)."""
    stride, cellsize = 2, 12
    reg = reg[0]  # (4, H, W)
    mask = probs >= thresh
    ys, xs = np.nonzero(mask)
    score = probs[mask]
    offsets = reg[:, mask].T
    bb = np.stack([xs, ys], axis=1).astype(np.float32)
    s = np.float32(scale)
    q1 = np.floor((stride * bb + 1) / s)
    q2 = np.floor((stride * bb + cellsize - 1 + 1) / s)
    return np.concatenate([q1, q2, score[:, None], offsets], axis=1).astype(np.float32)


def _bbreg(boxes: np.ndarray, reg: np.ndarray) -> np.ndarray:
    w = boxes[:, 2] - boxes[:, 0] + 1
    h = boxes[:, 3] - boxes[:, 1] + 1
    b1 = boxes[:, 0] + reg[:, 0] * w
    b2 = boxes[:, 1] + reg[:, 1] * h
    b3 = boxes[:, 2] + reg[:, 2] * w
    b4 = boxes[:, 3] + reg[:, 3] * h
    boxes[:, :4] = np.stack([b1, b2, b3, b4], axis=1)
    return boxes


def _rerec(boxes: np.ndarray) -> np.ndarray:
    h = boxes[:, 3] - boxes[:, 1]
    w = boxes[:, 2] - boxes[:, 0]
    side = np.maximum(w, h)
    boxes[:, 0] = boxes[:, 0] + w * 0.5 - side * 0.5
    boxes[:, 1] = boxes[:, 1] + h * 0.5 - side * 0.5
    boxes[:, 2:4] = boxes[:, :2] + side[:, None]
    return boxes


def _pad(boxes: np.ndarray, w: int, h: int) -> tuple[np.ndarray, ...]:
    b = np.trunc(boxes).astype(np.int32)
    x, y, ex, ey = b[:, 0], b[:, 1], b[:, 2], b[:, 3]
    x[x < 1] = 1
    y[y < 1] = 1
    ex[ex > w] = w
    ey[ey > h] = h
    return y, ey, x, ex


def _crops(img: np.ndarray, boxes: np.ndarray, w: int, h: int, size: int) -> np.ndarray:
    y, ey, x, ex = _pad(boxes, w, h)
    crops = [area_resize(img[:, y[k] - 1:ey[k], x[k] - 1:ex[k]], size, size)
             for k in range(len(y)) if ey[k] > y[k] - 1 and ex[k] > x[k] - 1]
    return ((np.stack(crops) - 127.5) * 0.0078125).astype(np.float32)


class NumpyMTCNN:
    """Detects faces in one RGB image: boxes (N, 5: x1, y1, x2, y2, prob) and landmarks (N, 5, 2),
    with the networks given as callables (see :data:`Net`)."""

    def __init__(self, pnet: Net, rnet: Net, onet: Net, *, min_face_size: int = 20,
                 thresholds: Sequence[float] = THRESHOLDS, factor: float = FACTOR) -> None:
        if not 0 < factor < 1 or min_face_size < 1:
            raise ValueError(f"bad MTCNN pyramid: min_face_size={min_face_size}, factor={factor}")
        self.pnet, self.rnet, self.onet = pnet, rnet, onet
        self.min_face_size = min_face_size
        self.thresholds = tuple(float(t) for t in thresholds)
        self.factor = factor

    def scales(self, h: int, w: int) -> list[float]:
        m = 12.0 / self.min_face_size
        minl = min(h, w) * m
        scales, scale = [], m
        while minl >= 12:
            scales.append(scale)
            scale *= self.factor
            minl *= self.factor
        return scales

    def detect(self, image) -> tuple[np.ndarray, np.ndarray]:
        """`image`: PIL image or H×W×3 uint8 array. Sorted by O-Net's 'Min' NMS (score order)."""
        img = np.asarray(image, dtype=np.uint8).transpose(2, 0, 1).astype(np.float32)
        h, w = img.shape[1:3]
        t1, t2, t3 = self.thresholds
        empty = (np.zeros((0, 5), dtype=np.float32), np.zeros((0, 5, 2), dtype=np.float32))

        # Stage 1: P-Net over the pyramid, NMS per scale, then across scales.
        found = []
        for scale in self.scales(h, w):
            data = area_resize(img, int(h * scale + 1), int(w * scale + 1))
            data = ((data - 127.5) * 0.0078125)[None].astype(np.float32)
            reg, probs = self.pnet(data)
            boxes = _proposals(reg, probs[0, 1], scale, t1)
            found.append(boxes[nms(boxes[:, :4], boxes[:, 4], 0.5)])
        boxes = np.concatenate(found, axis=0) if found else np.zeros((0, 9), np.float32)
        if len(boxes) == 0:
            return empty
        boxes = boxes[nms(boxes[:, :4], boxes[:, 4], 0.7)]
        regw = boxes[:, 2] - boxes[:, 0]
        regh = boxes[:, 3] - boxes[:, 1]
        boxes = np.stack([boxes[:, 0] + boxes[:, 5] * regw, boxes[:, 1] + boxes[:, 6] * regh,
                          boxes[:, 2] + boxes[:, 7] * regw, boxes[:, 3] + boxes[:, 8] * regh,
                          boxes[:, 4]], axis=1)
        boxes = _rerec(boxes)

        # Stage 2: R-Net on 24×24 crops.
        reg, probs = self.rnet(_crops(img, boxes, w, h, 24))
        score = probs[:, 1]
        ipass = score > t2
        boxes = np.concatenate((boxes[ipass, :4], score[ipass, None]), axis=1)
        reg = reg[ipass]
        if len(boxes) == 0:
            return empty
        pick = nms(boxes[:, :4], boxes[:, 4], 0.7)
        boxes = _rerec(_bbreg(boxes[pick], reg[pick]))

        # Stage 3: O-Net on 48×48 crops: scores, box regression, landmarks.
        reg, points, probs = self.onet(_crops(img, boxes, w, h, 48))
        score = probs[:, 1]
        ipass = score > t3
        points = points[ipass]
        boxes = np.concatenate((boxes[ipass, :4], score[ipass, None]), axis=1)
        reg = reg[ipass]
        if len(boxes) == 0:
            return empty
        w_i = (boxes[:, 2] - boxes[:, 0] + 1)[:, None]
        h_i = (boxes[:, 3] - boxes[:, 1] + 1)[:, None]
        px = w_i * points[:, :5] + boxes[:, 0:1] - 1
        py = h_i * points[:, 5:10] + boxes[:, 1:2] - 1
        points = np.stack((px, py), axis=2)
        boxes = _bbreg(boxes, reg)
        pick = nms(boxes[:, :4], boxes[:, 4], 0.7, "Min")
        return boxes[pick], points[pick]
