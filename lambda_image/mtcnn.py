"""MTCNN face detection in plain torch: facenet-pytorch's networks and detection logic, without
importing facenet_pytorch or torchvision.

Why: `import facenet_pytorch` costs ~2.5 s of a cold start, ~2.1 s of it torch._dynamo, which
torchvision 0.29's ops import eagerly (facenet's detect_face imports torchvision for
`batched_nms`). Here the P-/R-/O-Nets are the same nn.Modules (same layer names, so facenet's
shipped state dicts load unchanged), the weights are read from the installed facenet_pytorch
package's data/ folder without executing the package, and NMS is plain numpy.

The detection steps (pyramid, P-Net proposals, per-scale and global NMS, box regression, R-Net,
O-Net, 'Min' NMS) are ported from facenet_pytorch/models/utils/detect_face.py for a single image;
tests/function/test_function_mtcnn.py checks boxes, probabilities and landmarks against facenet's
MTCNN on the course clips.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn.functional import interpolate

from lambda_image.errors import WeightsError
from lambda_image.mtcnn_numpy import FACTOR, THRESHOLDS, nms


def weights_dir() -> Path:
    """facenet_pytorch/data inside the installed package, found without importing it.

    `find_spec` of a top-level package locates it (its `submodule_search_locations`) but does not
    run its __init__ (which would import torchvision and torch._dynamo). MTCNN_WEIGHTS_DIR
    overrides the location (a directory holding pnet.pt, rnet.pt, onet.pt).
    """
    override = os.environ.get("MTCNN_WEIGHTS_DIR", "").strip()
    if override:
        return Path(override)
    spec = importlib.util.find_spec("facenet_pytorch")
    if spec is None or not spec.submodule_search_locations:
        raise WeightsError("facenet-pytorch is not installed: its MTCNN weights (data/pnet.pt, "
                           "rnet.pt, onet.pt) are needed, or set MTCNN_WEIGHTS_DIR")
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def _load(module: nn.Module, path: Path) -> nn.Module:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        module.load_state_dict(state, strict=True)
    except FileNotFoundError as exc:
        raise WeightsError(f"MTCNN weights not found: {path}") from exc
    except Exception as exc:  # torch raises many types for a corrupt or foreign file
        raise WeightsError(f"cannot load MTCNN weights {path}: {exc}") from exc
    # oneDNN convolutions reorder NCHW weights on every call; channels-last weights avoid it:
    # R-/O-Net on a batch of crops run ~3x faster (outputs agree to ~3e-7).
    return module.eval().to(memory_format=torch.channels_last)


class PNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 10, kernel_size=3)
        self.prelu1 = nn.PReLU(10)
        self.pool1 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv2 = nn.Conv2d(10, 16, kernel_size=3)
        self.prelu2 = nn.PReLU(16)
        self.conv3 = nn.Conv2d(16, 32, kernel_size=3)
        self.prelu3 = nn.PReLU(32)
        self.conv4_1 = nn.Conv2d(32, 2, kernel_size=1)
        self.softmax4_1 = nn.Softmax(dim=1)
        self.conv4_2 = nn.Conv2d(32, 4, kernel_size=1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.prelu1(self.conv1(x))
        x = self.pool1(x)
        x = self.prelu2(self.conv2(x))
        x = self.prelu3(self.conv3(x))
        return self.conv4_2(x), self.softmax4_1(self.conv4_1(x))


class RNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 28, kernel_size=3)
        self.prelu1 = nn.PReLU(28)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2 = nn.Conv2d(28, 48, kernel_size=3)
        self.prelu2 = nn.PReLU(48)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3 = nn.Conv2d(48, 64, kernel_size=2)
        self.prelu3 = nn.PReLU(64)
        self.dense4 = nn.Linear(576, 128)
        self.prelu4 = nn.PReLU(128)
        self.dense5_1 = nn.Linear(128, 2)
        self.softmax5_1 = nn.Softmax(dim=1)
        self.dense5_2 = nn.Linear(128, 4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.prelu3(self.conv3(x))
        x = x.permute(0, 3, 2, 1).contiguous()
        x = self.prelu4(self.dense4(x.view(x.shape[0], -1)))
        return self.dense5_2(x), self.softmax5_1(self.dense5_1(x))


class ONet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 32, kernel_size=3)
        self.prelu1 = nn.PReLU(32)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2 = nn.Conv2d(32, 64, kernel_size=3)
        self.prelu2 = nn.PReLU(64)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3 = nn.Conv2d(64, 64, kernel_size=3)
        self.prelu3 = nn.PReLU(64)
        self.pool3 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv4 = nn.Conv2d(64, 128, kernel_size=2)
        self.prelu4 = nn.PReLU(128)
        self.dense5 = nn.Linear(1152, 256)
        self.prelu5 = nn.PReLU(256)
        self.dense6_1 = nn.Linear(256, 2)
        self.softmax6_1 = nn.Softmax(dim=1)
        self.dense6_2 = nn.Linear(256, 4)
        self.dense6_3 = nn.Linear(256, 10)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.pool3(self.prelu3(self.conv3(x)))
        x = self.prelu4(self.conv4(x))
        x = x.permute(0, 3, 2, 1).contiguous()
        x = self.prelu5(self.dense5(x.view(x.shape[0], -1)))
        return self.dense6_2(x), self.dense6_3(x), self.softmax6_1(self.dense6_1(x))


# --- box helpers (facenet's detect_face, one image; NMS is lambda_image.mtcnn_numpy's) -----------

def _nms_t(boxes: torch.Tensor, threshold: float, method: str = "Union") -> torch.Tensor:
    keep = nms(boxes[:, :4].numpy(), boxes[:, 4].numpy(), threshold, method)
    return torch.from_numpy(keep)


def _bbreg(boxes: torch.Tensor, reg: torch.Tensor) -> torch.Tensor:
    w = boxes[:, 2] - boxes[:, 0] + 1
    h = boxes[:, 3] - boxes[:, 1] + 1
    b1 = boxes[:, 0] + reg[:, 0] * w
    b2 = boxes[:, 1] + reg[:, 1] * h
    b3 = boxes[:, 2] + reg[:, 2] * w
    b4 = boxes[:, 3] + reg[:, 3] * h
    boxes[:, :4] = torch.stack([b1, b2, b3, b4]).permute(1, 0)
    return boxes


def _rerec(boxes: torch.Tensor) -> torch.Tensor:
    h = boxes[:, 3] - boxes[:, 1]
    w = boxes[:, 2] - boxes[:, 0]
    side = torch.max(w, h)
    boxes[:, 0] = boxes[:, 0] + w * 0.5 - side * 0.5
    boxes[:, 1] = boxes[:, 1] + h * 0.5 - side * 0.5
    boxes[:, 2:4] = boxes[:, :2] + side.repeat(2, 1).permute(1, 0)
    return boxes


def _pad(boxes: torch.Tensor, w: int, h: int) -> tuple[np.ndarray, ...]:
    b = boxes.trunc().int().numpy()
    x, y, ex, ey = b[:, 0], b[:, 1], b[:, 2], b[:, 3]
    x[x < 1] = 1
    y[y < 1] = 1
    ex[ex > w] = w
    ey[ey > h] = h
    return y, ey, x, ex


def _proposals(reg: torch.Tensor, probs: torch.Tensor, scale: float,
               thresh: float) -> torch.Tensor:
    """P-Net output map → candidate boxes [x1, y1, x2, y2, score, reg×4] (generateBoundingBox)."""
    stride, cellsize = 2, 12
    reg = reg[0]  # (4, H, W)
    mask = probs >= thresh
    inds = mask.nonzero()
    score = probs[mask]
    reg = reg[:, mask].permute(1, 0)
    bb = inds.to(reg.dtype).flip(1)
    q1 = ((stride * bb + 1) / scale).floor()
    q2 = ((stride * bb + cellsize - 1 + 1) / scale).floor()
    return torch.cat([q1, q2, score.unsqueeze(1), reg], dim=1)


def _crops(img: torch.Tensor, boxes: torch.Tensor, w: int, h: int, size: int) -> torch.Tensor:
    y, ey, x, ex = _pad(boxes, w, h)
    crops = [interpolate(img[:, :, y[k] - 1:ey[k], x[k] - 1:ex[k]], size=(size, size), mode="area")
             for k in range(len(y)) if ey[k] > y[k] - 1 and ex[k] > x[k] - 1]
    data = (torch.cat(crops, dim=0) - 127.5) * 0.0078125
    return data.contiguous(memory_format=torch.channels_last)


class MTCNN:
    """Detects faces in one RGB image: boxes (N, 5: x1, y1, x2, y2, prob) and landmarks (N, 5, 2).

    `min_face_size` (px) and `factor` set the image pyramid: the first scale maps the smallest
    face to P-Net's 12 px window, each next scale is `factor` times the previous.
    """

    def __init__(self, *, min_face_size: int = 20, thresholds=THRESHOLDS, factor: float = FACTOR,
                 weights: Path | None = None) -> None:
        if not 0 < factor < 1 or min_face_size < 1:
            raise ValueError(f"bad MTCNN pyramid: min_face_size={min_face_size}, factor={factor}")
        root = Path(weights) if weights is not None else weights_dir()
        self.min_face_size = min_face_size
        self.thresholds = tuple(float(t) for t in thresholds)
        self.factor = factor
        self.pnet = _load(PNet(), root / "pnet.pt")
        self.rnet = _load(RNet(), root / "rnet.pt")
        self.onet = _load(ONet(), root / "onet.pt")

    def scales(self, h: int, w: int) -> list[float]:
        m = 12.0 / self.min_face_size
        minl = min(h, w) * m
        scales, scale = [], m
        while minl >= 12:
            scales.append(scale)
            scale *= self.factor
            minl *= self.factor
        return scales

    @torch.inference_mode()
    def detect(self, image) -> tuple[np.ndarray, np.ndarray]:
        """`image`: PIL image or H×W×3 uint8 array. Sorted by O-Net's 'Min' NMS (score order)."""
        arr = np.array(image, dtype=np.uint8)  # a writable copy (PIL's array view is read-only)
        img = torch.from_numpy(arr).permute(2, 0, 1).unsqueeze(0).float()
        h, w = img.shape[2:4]
        t1, t2, t3 = self.thresholds
        empty = (np.zeros((0, 5), dtype=np.float32), np.zeros((0, 5, 2), dtype=np.float32))

        # Stage 1: P-Net over the pyramid, NMS per scale, then across scales.
        found = []
        for scale in self.scales(h, w):
            data = interpolate(img, size=(int(h * scale + 1), int(w * scale + 1)), mode="area")
            data = ((data - 127.5) * 0.0078125).contiguous(memory_format=torch.channels_last)
            reg, probs = self.pnet(data)
            boxes = _proposals(reg, probs[0, 1], scale, t1)
            found.append(boxes[_nms_t(boxes, 0.5)])
        boxes = torch.cat(found, dim=0) if found else torch.zeros(0, 9)
        if len(boxes) == 0:
            return empty
        boxes = boxes[_nms_t(boxes, 0.7)]
        regw = boxes[:, 2] - boxes[:, 0]
        regh = boxes[:, 3] - boxes[:, 1]
        boxes = torch.stack([boxes[:, 0] + boxes[:, 5] * regw, boxes[:, 1] + boxes[:, 6] * regh,
                             boxes[:, 2] + boxes[:, 7] * regw, boxes[:, 3] + boxes[:, 8] * regh,
                             boxes[:, 4]]).permute(1, 0)
        boxes = _rerec(boxes)

        # Stage 2: R-Net on 24×24 crops.
        reg, probs = self.rnet(_crops(img, boxes, w, h, 24))
        score = probs[:, 1]
        ipass = score > t2
        boxes = torch.cat((boxes[ipass, :4], score[ipass].unsqueeze(1)), dim=1)
        reg = reg[ipass]
        if len(boxes) == 0:
            return empty
        pick = _nms_t(boxes, 0.7)
        boxes = _rerec(_bbreg(boxes[pick], reg[pick]))

        # Stage 3: O-Net on 48×48 crops: scores, box regression, landmarks.
        reg, points, probs = self.onet(_crops(img, boxes, w, h, 48))
        score = probs[:, 1]
        ipass = score > t3
        points = points[ipass]
        boxes = torch.cat((boxes[ipass, :4], score[ipass].unsqueeze(1)), dim=1)
        reg = reg[ipass]
        if len(boxes) == 0:
            return empty
        w_i = (boxes[:, 2] - boxes[:, 0] + 1).unsqueeze(1)
        h_i = (boxes[:, 3] - boxes[:, 1] + 1).unsqueeze(1)
        px = w_i * points[:, :5] + boxes[:, 0:1] - 1
        py = h_i * points[:, 5:10] + boxes[:, 1:2] - 1
        points = torch.stack((px, py), dim=2)
        boxes = _bbreg(boxes, reg)
        pick = _nms_t(boxes, 0.7, "Min")
        return boxes[pick].numpy(), points[pick].numpy()
