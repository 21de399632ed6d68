"""Face embedders behind one interface: dlib's 128-d ResNet and facenet's 512-d InceptionResnetV1.

Both take the full-resolution RGB frame and MTCNN detections and return one row per detection.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
import structlog
from PIL import Image

from lambda_image.detection import Detection
from lambda_image.errors import WeightsError

log = structlog.get_logger()


class Embedder(Protocol):
    name: str
    dim: int

    def embed(self, rgb: np.ndarray, faces: Sequence[Detection]) -> np.ndarray:
        """(len(faces), dim) float32 embeddings of `faces` in the H×W×3 uint8 frame `rgb`."""
        ...


# --- dlib -----------------------------------------------------------------------------------------

#: Who runs dlib's face-recognition ResNet on the aligned chips: "torch" (the same weights, read
#: from dlib's file by lambda_image.dlib_resnet; ~25 ms/face), "onnx" (that port exported, run by
#: onnxruntime) or "dlib" itself (~175 ms/face with dlib-bin, which has no BLAS). Descriptors agree
#: to ~3e-7 (tests/function/test_function_dlib_resnet.py, test_function_onnx.py).
DLIB_ENCODERS = ("torch", "onnx", "dlib")

#: dlib's HOG window is 80×80: the refinement crop is scaled so the face is about this wide.
_HOG_FACE_PX = 100


def mtcnn_to_dlib_box(box: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
    """Approximate dlib-detector geometry from an MTCNN box: square, ~5% wider, a bit lower.

    MTCNN boxes are taller (forehead to chin) than dlib's square boxes; the 5-point predictor was
    trained on the latter. Fitted on the course clips' first frames (HOG box vs MTCNN box).
    """
    x1, y1, x2, y2 = box
    half = 1.05 * (x2 - x1) / 2
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2 + 0.035 * (y2 - y1)
    return cx - half, cy - half, cx + half, cy + half


def frontal_face_detector(cache_dir: Path | None = None):  # -> dlib.fhog_object_detector
    """dlib's HOG frontal face detector, loaded from `cache_dir` when it was saved there before.

    `dlib.get_frontal_face_detector()` costs ~0.9 s (it decodes the model from a string compiled
    into dlib); loading the same detector from dlib's own file format (`save` /
    `fhog_object_detector(path)`) costs ~3 ms. So the first call saves it under `cache_dir` (keyed
    by dlib's version) and later processes load it. The function image bakes the file in at build
    time (Dockerfile); an unwritable or unusable cache only costs the slow path, never an error.
    """
    import dlib

    if cache_dir is None:
        return dlib.get_frontal_face_detector()
    path = Path(cache_dir) / f"dlib-{dlib.__version__}-frontal_face_detector.svm"
    if path.is_file():
        try:
            return dlib.fhog_object_detector(str(path))
        except RuntimeError as exc:  # truncated or foreign file: rebuild it below
            log.warning("dlib.hog_cache_unreadable", path=str(path), error=str(exc))
    detector = dlib.get_frontal_face_detector()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        detector.save(str(tmp))
        os.replace(tmp, path)
    except (OSError, RuntimeError) as exc:
        log.info("dlib.hog_cache_not_written", path=str(path), error=str(exc))
    return detector


def _dlib_models():  # -> the face_recognition_models module
    """dlib's model files as a package (126 MB): the torch runtime's source, not in the image."""
    try:
        import face_recognition_models
    except ImportError as exc:
        raise WeightsError("face_recognition_models is not installed: give the exported model "
                           "directory (MODEL_DIR) instead") from exc
    return face_recognition_models


class DlibEmbedder:
    """dlib's face-recognition ResNet (the course `encoding` gallery's space).

    Alignment: the 5-point shape predictor expects dlib-detector boxes, and raw MTCNN boxes drift
    (vin_diesel 0.58 instead of 0.47). So each MTCNN face is re-detected by dlib's HOG detector in
    a small crop around it (~10 ms), which yields exactly the geometry the predictor was trained
    on; where HOG finds nothing (profile faces) the box is mapped geometrically instead.

    The chips are dlib's own (`get_face_chips`, 150 px, padding 0.25, exactly what
    `compute_face_descriptor` extracts); `encoder` picks who runs the ResNet on them.
    """

    name = "dlib"
    dim = 128

    def __init__(self, *, encoder: str = "torch", num_jitters: int = 1,
                 cache_dir: Path | None = None, model_dir: Path | None = None,
                 threads: int = 1) -> None:
        """*model_dir* (an export, lambda_image.onnx_models): dlib's 5-point predictor and HOG
        detector come from it, and the onnx encoder's network; without it they come from the
        face_recognition_models package and *cache_dir* (the torch and dlib encoders)."""
        import dlib

        if encoder not in DLIB_ENCODERS:
            raise ValueError(f"unknown dlib encoder {encoder!r} (one of {', '.join(DLIB_ENCODERS)})")
        if encoder != "dlib" and num_jitters > 1:
            raise ValueError("jittered descriptors need the dlib encoder")
        self.encoder = encoder
        self.num_jitters = num_jitters
        self._dlib = dlib
        if model_dir is not None:
            from lambda_image import onnx_models as files

            models = files.ModelDir(model_dir)
            predictor = models.file(files.PREDICTOR_5)
            self._hog = frontal_face_detector(model_dir)
        else:
            predictor = Path(_dlib_models().pose_predictor_five_point_model_location())
            self._hog = frontal_face_detector(cache_dir)
        self._predictor = dlib.shape_predictor(str(predictor))
        if encoder == "onnx":
            from lambda_image import onnx_models as files

            if model_dir is None:
                raise ValueError("the onnx encoder needs the exported model directory")
            self._encode = files.OnnxFaceEncoder(files.ModelDir(model_dir).file(files.DLIB_RESNET),
                                                 threads=threads)
        elif encoder == "torch":
            from lambda_image.dlib_resnet import TorchFaceEncoder

            self._encode = TorchFaceEncoder(_dlib_models().face_recognition_model_location())
        else:
            reference = dlib.face_recognition_model_v1(
                _dlib_models().face_recognition_model_location())

            def encode(chips: list[np.ndarray]) -> np.ndarray:
                vectors = reference.compute_face_descriptor(chips, self.num_jitters)
                return np.asarray([np.asarray(v) for v in vectors], dtype=np.float32)

            self._encode = encode

    def dlib_box(self, rgb: np.ndarray, face: Detection) -> tuple[float, float, float, float]:
        """The box dlib's own detector would give for this face (HOG in a crop), else a mapping."""
        x1, y1, x2, y2 = face.box
        height, width = rgb.shape[:2]
        side = max(x2 - x1, y2 - y1)
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        left, top = int(max(0, cx - 0.9 * side)), int(max(0, cy - 0.9 * side))
        right, bottom = int(min(width, cx + 0.9 * side)), int(min(height, cy + 0.9 * side))
        factor = _HOG_FACE_PX / max(1.0, x2 - x1)
        if right - left >= 8 and bottom - top >= 8:
            crop = Image.fromarray(rgb[top:bottom, left:right])
            size = (max(1, round(crop.width * factor)), max(1, round(crop.height * factor)))
            small = np.asarray(crop.resize(size, Image.BOX))
            rects, scores, _ = self._hog.run(small, 0, -0.5)
            if len(rects):
                r = rects[int(np.argmax(scores))]
                return (left + r.left() / factor, top + r.top() / factor,
                        left + r.right() / factor, top + r.bottom() / factor)
        return mtcnn_to_dlib_box(face.box)

    def shapes(self, rgb: np.ndarray, faces: Sequence[Detection]):  # -> full_object_detections
        """dlib's 5-point landmarks of each face (on its dlib-geometry box)."""
        shapes = self._dlib.full_object_detections()
        for face in faces:
            box = self.dlib_box(rgb, face)
            rect = self._dlib.rectangle(*(round(v) for v in box))
            shapes.append(self._predictor(rgb, rect))
        return shapes

    def chips(self, rgb: np.ndarray, faces: Sequence[Detection]) -> list[np.ndarray]:
        """150×150 aligned face chips, the encoder's input (what compute_face_descriptor crops)."""
        return list(self._dlib.get_face_chips(rgb, self.shapes(rgb, faces), size=150,
                                              padding=0.25))

    def embed(self, rgb: np.ndarray, faces: Sequence[Detection]) -> np.ndarray:
        if not faces:
            return np.zeros((0, self.dim), dtype=np.float32)
        return self._encode(self.chips(np.ascontiguousarray(rgb), faces))


# --- facenet --------------------------------------------------------------------------------------

def load_inception_resnet(weights: Path):  # -> facenet_pytorch.InceptionResnetV1
    """InceptionResnetV1 from a local state-dict file; never downloads (pretrained=None)."""
    import torch
    from facenet_pytorch import InceptionResnetV1

    if not Path(weights).is_file():
        raise WeightsError(f"facenet weights not found at {weights} (set FACENET_WEIGHTS or put "
                           "20180402-114759-vggface2.pt under $TORCH_HOME/checkpoints)")
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a corrupt file
        raise WeightsError(f"cannot read facenet weights {weights}: {exc}") from exc
    # The released file carries the 8631-class VGGFace2 classifier; embeddings don't use it.
    state = {k: v for k, v in state.items() if not k.startswith("logits.")}
    model = InceptionResnetV1(pretrained=None, classify=False)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise WeightsError(f"{weights} is not an InceptionResnetV1 state dict: {exc}") from exc
    return model.eval()


def facenet_crops(rgb: np.ndarray, faces: Sequence[Detection], size: int = 160) -> np.ndarray:
    """(n, 3, size, size) float32 InceptionResnetV1 inputs: facenet-pytorch's extract_face (box
    truncated to int, PIL crop, bilinear resize, no margin) and fixed_image_standardization
    ((x - 127.5) / 128), without torch."""
    image = Image.fromarray(rgb)
    width, height = image.size
    crops = []
    for face in faces:
        x1, y1, x2, y2 = face.box
        box = (int(max(x1, 0)), int(max(y1, 0)), int(min(x2, width)), int(min(y2, height)))
        crop = image.crop(box).copy().resize((size, size), Image.BILINEAR)
        crops.append(np.float32(crop).transpose(2, 0, 1))
    return ((np.stack(crops) - 127.5) / 128.0).astype(np.float32)


class FacenetEmbedder:
    """facenet-pytorch InceptionResnetV1 ('vggface2' weights), 512-d, unit norm: in torch from a
    state-dict file, or on onnxruntime from the export (`model_dir`)."""

    name = "facenet"
    dim = 512

    def __init__(self, weights: Path | None = None, *, image_size: int = 160,
                 runtime: str = "torch", model_dir: Path | None = None, threads: int = 1) -> None:
        self.image_size = image_size
        self.runtime = runtime
        if runtime == "onnx":
            from lambda_image import onnx_models as files

            if model_dir is None:
                raise ValueError("the onnx facenet embedder needs the exported model directory")
            net = files.OnnxNet(files.ModelDir(model_dir).file(files.FACENET), threads=threads)
            self._run = lambda batch: np.asarray(net(batch)[0], dtype=np.float32)
        else:
            if weights is None:
                raise WeightsError("the facenet embedder needs a weights file")
            model = load_inception_resnet(weights)

            def run(batch: np.ndarray) -> np.ndarray:
                import torch

                with torch.inference_mode():
                    return model(torch.from_numpy(batch)).numpy().astype(np.float32)

            self._run = run

    def embed(self, rgb: np.ndarray, faces: Sequence[Detection]) -> np.ndarray:
        if not faces:
            return np.zeros((0, self.dim), dtype=np.float32)
        return self._run(facenet_crops(rgb, faces, self.image_size))


def build_embedder(name: str, *, facenet_weights: Path | None = None,
                   dlib_encoder: str = "torch", cache_dir: Path | None = None,
                   runtime: str = "torch", model_dir: Path | None = None,
                   threads: int = 1) -> Embedder:
    """The embedder of a gallery's space. On the onnx runtime every file comes from *model_dir*."""
    onnx_dir = model_dir if runtime == "onnx" else None
    if name == "dlib":
        return DlibEmbedder(encoder=dlib_encoder, cache_dir=cache_dir, model_dir=onnx_dir,
                            threads=threads)
    if name == "facenet":
        return FacenetEmbedder(facenet_weights, runtime=runtime, model_dir=onnx_dir,
                               threads=threads)
    raise ValueError(f"unknown embedder {name!r}")
