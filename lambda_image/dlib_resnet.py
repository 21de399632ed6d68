"""dlib's face-recognition ResNet (`dlib_face_recognition_resnet_model_v1.dat`) run in torch.

dlib-bin is built without BLAS, so its own forward pass costs ~175 ms per face here; the same
network in torch (oneDNN) costs a few tens of ms. The weights are read straight from dlib's file:
no conversion step, no second copy of the model.

The file is dlib's binary serialisation of `anet_type` from dlib's dnn_face_recognition_ex.cpp /
tools/python/src/face_recognition.cpp. Layout (checked against dlib's serialize.h, core.h,
layers.h and input.h):

* integers: one control byte (low 4 bits: byte count, 0x80: negative), then little-endian bytes;
  strings: length integer + bytes; floats (scalars): mantissa integer + exponent integer;
  bools: the characters '0' / '1'; tensors: version 2, four shape integers, raw float32 LE data;
* `add_layer` writes its version, then its sub-network, then its own layer and state, so after the
  loss layer and one version integer per layer (tags and skips included) come the input layer and
  then every computational layer from the input upwards.

Semantics reproduced here (all from dlib's layer definitions, and verified end to end against
`face_recognition_model_v1.compute_face_descriptor` on the course clips, tests/function):

* input: (pixel - avg) / 256 per RGB channel, avg stored in the file (122.782, 117.001, 104.298);
* con: cross-correlation + bias; padding as serialised (dlib's default: nr/2 for stride 1, 0 for
  strided convolutions, so the 7×7/2 stem and the 3×3/2 down-sampling convs are unpadded);
* affine: per-channel gamma·x + beta (folded into the preceding convolution here);
* max_pool 3×3/2 and avg_pool 2×2/2 unpadded; avg_pool 0×0 = average over all positions;
* add_prev: output shape is the element-wise max of both inputs' shapes, each input added over
  its own extent, zeros elsewhere (the 8→3 vs 8→4 down-sampling mismatch and the 128→256
  channel change rely on this);
* fc_no_bias: out = x · W with W stored (inputs, outputs); the descriptor is its raw output (not
  normalised).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lambda_image.errors import WeightsError

CHIP_SIZE = 150


# --- dlib's serialisation -------------------------------------------------------------------------

class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def int(self) -> int:
        control = self.data[self.pos]
        size = control & 0x0F
        if size == 0 or size > 8 or self.pos + 1 + size > len(self.data):
            raise WeightsError(f"bad integer at byte {self.pos}")
        value = int.from_bytes(self.data[self.pos + 1:self.pos + 1 + size], "little")
        self.pos += 1 + size
        return -value if control & 0x80 else value

    def str(self) -> str:
        size = self.int()
        if size > 256:
            raise WeightsError(f"implausible string length {size} at byte {self.pos}")
        value = self.data[self.pos:self.pos + size].decode("ascii")
        self.pos += size
        return value

    def float(self) -> float:
        mantissa = self.int()
        exponent = self.int()
        return float(np.ldexp(float(mantissa), exponent))

    def bools(self, n: int) -> bytes:
        value = self.data[self.pos:self.pos + n]
        if len(value) != n or set(value) - {ord("0"), ord("1")}:
            raise WeightsError(f"expected {n} serialised bools at byte {self.pos}")
        self.pos += n
        return value

    def tensor(self) -> np.ndarray:
        version = self.int()
        if version != 2:
            raise WeightsError(f"unsupported tensor version {version} at byte {self.pos}")
        shape = tuple(self.int() for _ in range(4))
        count = int(np.prod(shape))
        if self.pos + 4 * count > len(self.data):
            raise WeightsError("tensor runs past the end of the file")
        values = np.frombuffer(self.data, dtype="<f4", count=count, offset=self.pos)
        self.pos += 4 * count
        return values.reshape(shape)

    def alias(self) -> tuple[int, int, int, int]:
        self.int()  # alias_tensor's version
        return tuple(self.int() for _ in range(4))  # type: ignore[return-value]


@dataclass
class DlibLayer:
    kind: str  # con | affine | relu | max_pool | avg_pool | add_prev | fc
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class DlibNet:
    mean_rgb: tuple[float, float, float]
    size: int
    layers: list[DlibLayer]  # computational layers, input side first


_NAMES = {"con_4": "con", "affine_": "affine", "relu_": "relu", "max_pool_2": "max_pool",
          "avg_pool_2": "avg_pool", "add_prev_": "add_prev", "fc_2": "fc"}


def read_dlib_net(path: Path | str) -> DlibNet:
    """Parse dlib_face_recognition_resnet_model_v1.dat (arrays are views into the file's bytes)."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise WeightsError(f"cannot read dlib model {path}: {exc}") from exc
    try:
        return _parse(_Reader(data))
    except (IndexError, UnicodeDecodeError, ValueError) as exc:
        raise WeightsError(f"{path}: not a dlib face-recognition ResNet file: {exc}") from exc


def _parse(r: _Reader) -> DlibNet:
    r.int()  # add_loss_layer version
    if r.str() != "loss_metric_2":
        raise WeightsError("expected a loss_metric network (dlib's face-recognition ResNet)")
    r.float(), r.float()  # margin, distance threshold
    # One version integer per layer, down to the input layer's name.
    marker = b"\x01\x15input_rgb_image_sized"
    start = r.data.find(marker, r.pos)
    if start < 0 or start - r.pos > 4096:
        raise WeightsError("input_rgb_image_sized layer not found")
    r.pos = start
    r.str()
    mean = (r.float(), r.float(), r.float())
    rows, cols = r.int(), r.int()
    if rows != cols:
        raise WeightsError(f"non-square input {rows}×{cols}")
    layers: list[DlibLayer] = []
    while True:
        name = r.str()
        kind = _NAMES.get(name)
        if kind is None:
            raise WeightsError(f"unsupported dlib layer {name!r}")
        p: dict[str, Any] = {}
        if kind == "con":
            params = r.tensor().reshape(-1)
            n, kh, kw, sy, sx, py, px = (r.int() for _ in range(7))
            filters, _biases = r.alias(), r.alias()
            [r.float() for _ in range(4)]  # learning-rate / weight-decay multipliers
            size = int(np.prod(filters))
            p.update(weight=params[:size].reshape(filters), bias=params[size:size + n],
                     stride=(sy, sx), padding=(py, px))
            if filters[0] != n or (filters[2], filters[3]) != (kh, kw) or params.size != size + n:
                raise WeightsError(f"inconsistent con_ layer {filters} vs {n}×{kh}×{kw}")
        elif kind == "affine":
            params = r.tensor().reshape(-1)
            gamma, _beta = r.alias(), r.alias()
            mode = r.int()
            k = int(np.prod(gamma))
            if mode != 0 or params.size != 2 * k:  # 0 = CONV_MODE: one gamma/beta per channel
                raise WeightsError(f"unsupported affine_ layer (mode {mode}, {params.size} params)")
            p.update(gamma=params[:k], beta=params[k:])
        elif kind in ("max_pool", "avg_pool"):
            nr, nc, sy, sx, py, px = (r.int() for _ in range(6))
            p.update(kernel=(nr, nc), stride=(sy, sx), padding=(py, px))
        elif kind == "fc":
            outputs, inputs = r.int(), r.int()
            params = r.tensor().reshape(-1)
            r.alias(), r.alias()
            bias_mode = r.int()
            [r.float() for _ in range(4)]
            if bias_mode != 1 or params.size != inputs * outputs:  # 1 = FC_NO_BIAS
                raise WeightsError("expected fc_no_bias")
            p.update(weight=params.reshape(inputs, outputs))
        r.bools(3)  # this_layer_setup_called, gradient_input_is_stale, output/grad disabled
        for _ in range(3):  # x_grad, cached_output, params_grad
            r.tensor()
        if not layers:
            r.int()  # the add_layer directly on the input layer (version 3) stores one more field
        layers.append(DlibLayer(kind, p))
        if kind == "fc":
            break
    return DlibNet(mean_rgb=mean, size=rows, layers=layers)


# --- the network in torch -------------------------------------------------------------------------

def _folded_conv(con: DlibLayer, affine: DlibLayer):  # -> torch.nn.Module
    """con followed by affine as one convolution: gamma·(W*x + b) + beta."""
    import torch
    import torch.nn.functional as F

    class Conv(torch.nn.Module):
        # Parameters straight from the file: nn.Conv2d would first random-initialise them.
        def __init__(self, weight: np.ndarray, bias: np.ndarray, stride, padding) -> None:
            super().__init__()
            self.weight = torch.nn.Parameter(torch.from_numpy(weight), requires_grad=False)
            self.bias = torch.nn.Parameter(torch.from_numpy(bias), requires_grad=False)
            self.stride, self.padding = tuple(stride), tuple(padding)

        def forward(self, x):
            return F.conv2d(x, self.weight, self.bias, self.stride, self.padding)

    gamma, beta = affine.params["gamma"], affine.params["beta"]
    weight = (con.params["weight"] * gamma[:, None, None, None]).astype(np.float32)
    bias = (con.params["bias"] * gamma + beta).astype(np.float32)
    return Conv(weight, bias, con.params["stride"], con.params["padding"])


def _build_module(net: DlibNet):  # -> torch.nn.Module
    import torch
    import torch.nn.functional as F

    class Residual(torch.nn.Module):
        def __init__(self, conv1, conv2, pool: tuple | None) -> None:
            super().__init__()
            self.conv1, self.conv2, self.pool = conv1, conv2, pool

        def forward(self, x):
            y = self.conv2(F.relu(self.conv1(x)))
            s = x if self.pool is None else F.avg_pool2d(x, self.pool[0], self.pool[1],
                                                         self.pool[2])
            if s.shape != y.shape:  # dlib's add_prev: max shape, zeros where an input ends
                c, h, w = (max(a, b) for a, b in zip(s.shape[1:], y.shape[1:], strict=True))
                s = F.pad(s, (0, w - s.shape[3], 0, h - s.shape[2], 0, c - s.shape[1]))
                y = F.pad(y, (0, w - y.shape[3], 0, h - y.shape[2], 0, c - y.shape[1]))
            return F.relu(y + s)

    class FaceResNet(torch.nn.Module):
        def __init__(self, stem, pool, blocks, fc_weight, mean) -> None:
            super().__init__()
            self.stem, self.pool = stem, pool
            self.blocks = torch.nn.Sequential(*blocks)
            self.fc_weight = torch.nn.Parameter(torch.from_numpy(np.ascontiguousarray(fc_weight.T)),
                                                requires_grad=False)
            self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))

        def forward(self, chips):
            """chips: (N, 3, H, W) float32 RGB pixel values 0..255."""
            x = (chips - self.mean) / 256.0
            x = F.relu(self.stem(x))
            x = F.max_pool2d(x, self.pool[0], self.pool[1], self.pool[2])
            x = self.blocks(x)
            return F.linear(x.mean(dim=(2, 3)), self.fc_weight)

    kinds = [layer.kind for layer in net.layers]
    layers = net.layers

    def expect(i: int, *want: str) -> None:
        got = tuple(kinds[i:i + len(want)])
        if got != want:
            raise WeightsError(f"unexpected dlib layer sequence at {i}: {got}, wanted {want}")

    expect(0, "con", "affine", "relu", "max_pool")
    stem = _folded_conv(layers[0], layers[1])
    mp = layers[3].params
    i, blocks = 4, []
    while kinds[i] == "con":
        expect(i, "con", "affine", "relu", "con", "affine")
        conv1, conv2 = _folded_conv(layers[i], layers[i + 1]), _folded_conv(layers[i + 3],
                                                                             layers[i + 4])
        i += 5
        pool = None
        if kinds[i] == "avg_pool":
            ap = layers[i].params
            pool = (ap["kernel"], ap["stride"], ap["padding"])
            i += 1
        expect(i, "add_prev", "relu")
        i += 2
        blocks.append(Residual(conv1, conv2, pool))
    expect(i, "avg_pool", "fc")
    if layers[i].params["kernel"] != (0, 0):
        raise WeightsError("expected avg_pool_everything before the fc layer")
    return FaceResNet(stem, (mp["kernel"], mp["stride"], mp["padding"]), blocks,
                      layers[i + 1].params["weight"], net.mean_rgb).eval()


class TorchFaceEncoder:
    """Drop-in for `dlib.face_recognition_model_v1(...).compute_face_descriptor(chips)` (no
    jitter): 150×150 RGB chips from `dlib.get_face_chip(s)` → (n, 128) float32 descriptors."""

    def __init__(self, model_path: Path | str) -> None:
        self.net = read_dlib_net(model_path)
        import torch

        # Channels-last weights and inputs: oneDNN skips a per-call weight reorder (~17 instead
        # of ~23 ms for one chip, 28 instead of 47 ms for two; descriptors agree to ~1e-7).
        self.module = _build_module(self.net).to(memory_format=torch.channels_last)

    def __call__(self, chips: list[np.ndarray] | np.ndarray) -> np.ndarray:
        import torch

        batch = np.ascontiguousarray(np.asarray(chips, dtype=np.uint8))
        if batch.ndim != 4 or batch.shape[1:] != (self.net.size, self.net.size, 3):
            raise ValueError(f"expected (n, {self.net.size}, {self.net.size}, 3) RGB chips, "
                             f"got {batch.shape}")
        with torch.inference_mode():
            # NHWC uint8 → float, viewed as NCHW: already channels-last, no copy
            x = torch.from_numpy(batch).float().permute(0, 3, 1, 2)
            return self.module(x).numpy().astype(np.float32, copy=False)
