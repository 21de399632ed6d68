"""Export the function's networks to ONNX with torch (a build step; torch stays the source of the
models and the reference): `python -m lambda_image export-onnx --out DIR [--facenet-weights F]`.

What DIR holds is listed in lambda_image.onnx_models. The directory is written under a temporary
name and renamed when complete, so a reader never sees half an export.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import warnings
from pathlib import Path
from typing import Any

import structlog

from lambda_image import onnx_models as files

log = structlog.get_logger()

#: ONNX opset of the export (onnxruntime ≥ 1.14 runs it).
OPSET = 17


def export_models(out: Path, *, facenet_weights: Path | None = None) -> dict[str, Any]:
    """Write every model the ONNX runtime needs to *out* (replacing it); returns the manifest.

    Without *facenet_weights* the directory serves dlib galleries only, and its manifest says so.
    """
    import dlib
    import face_recognition_models as dlib_models
    import torch

    from lambda_image.embedders import frontal_face_detector

    out = Path(out)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    started = time.perf_counter()
    try:
        for name, module, example, inputs, outputs, dynamic in _networks(facenet_weights):
            _export(module, example, tmp / name, inputs, outputs, dynamic)
        shutil.copyfile(dlib_models.pose_predictor_five_point_model_location(),
                        tmp / files.PREDICTOR_5)
        frontal_face_detector(tmp)  # saves dlib-<version>-frontal_face_detector.svm there
        manifest = {
            "schema": 1,
            "torch": torch.__version__, "dlib": dlib.__version__, "opset": OPSET,
            "facenet": files.FACENET if facenet_weights is not None else None,
            "files": {p.name: {"bytes": p.stat().st_size, "sha256": _sha256(p)}
                      for p in sorted(tmp.iterdir())},
        }
        (tmp / files.MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("export.done", out=str(out), seconds=round(time.perf_counter() - started, 1),
             facenet=manifest["facenet"] is not None)
    return manifest


def _networks(facenet_weights: Path | None):  # -> Iterator[(file, module, example, ...)]
    import face_recognition_models as dlib_models
    import torch

    from lambda_image.dlib_resnet import _build_module, read_dlib_net
    from lambda_image.mtcnn import ONet, PNet, RNet, _load, weights_dir

    root = weights_dir()
    batch = {0: "n"}
    for file, net, size, outputs in ((files.PNET, PNet, None, ("reg", "prob")),
                                     (files.RNET, RNet, 24, ("reg", "prob")),
                                     (files.ONET, ONet, 48, ("reg", "points", "prob"))):
        module = _load(net(), root / file.removeprefix("mtcnn_").replace(".onnx", ".pt"))
        module = module.to(memory_format=torch.contiguous_format)
        if size is None:  # P-Net is fully convolutional: any image size
            spatial = {2: "h", 3: "w"}
            yield (file, module, torch.zeros(1, 3, 60, 80), ("image",), outputs,
                   {"image": spatial, **{o: spatial for o in outputs}})
        else:
            yield (file, module, torch.zeros(2, 3, size, size), ("crops",), outputs,
                   {"crops": batch, **{o: batch for o in outputs}})

    resnet = _build_module(read_dlib_net(dlib_models.face_recognition_model_location()))
    yield (files.DLIB_RESNET, _channels_last_input(resnet), torch.full((2, 150, 150, 3), 128.0),
           ("chips",), ("descriptors",), {"chips": batch, "descriptors": batch})

    if facenet_weights is not None:
        from lambda_image.embedders import load_inception_resnet

        yield (files.FACENET, load_inception_resnet(facenet_weights),
               torch.zeros(2, 3, 160, 160), ("faces",), ("embeddings",),
               {"faces": batch, "embeddings": batch})


def _channels_last_input(module):  # -> torch.nn.Module
    """dlib's ResNet taking (n, 150, 150, 3) RGB, the layout dlib's chips come in."""
    import torch

    class ChannelsLast(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = module

        def forward(self, chips):
            return self.net(chips.permute(0, 3, 1, 2))

    return ChannelsLast().eval()


def _export(module, example, path: Path, inputs, outputs, dynamic) -> None:
    import torch

    # dlib's add_prev pads by shape differences that the tracer records as constants: right for
    # the fixed 150×150 chips (only the batch is dynamic, and tests check several batch sizes).
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        torch.onnx.export(module, (example,), str(path), dynamo=False, opset_version=OPSET,
                          input_names=list(inputs), output_names=list(outputs),
                          dynamic_axes=dynamic, do_constant_folding=True)
    log.info("export.model", file=path.name, bytes=path.stat().st_size)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
