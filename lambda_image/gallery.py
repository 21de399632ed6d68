"""Galleries: load/save the two formats, detect which one a file is, enrol, inspect.

* course `encoding` pickle: {"name": [str], "encoding": [ndarray (128,)]}  ⇒ dlib space;
* `data.pt` (torch.save([[tensor (1, 512)], [str]]))                         ⇒ facenet space.
"""

from __future__ import annotations

import io
import pickle
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import structlog
from PIL import Image

from lambda_image.errors import GalleryError

log = structlog.get_logger()

EMBEDDER_DIMS = {"dlib": 128, "facenet": 512}
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png"}
ENROLL_DETECT_SIDE = 800  # photos are detected on a copy at most this large
_ZIP_MAGIC = b"PK\x03\x04"  # torch.save's default (zip) serialisation


@dataclass(frozen=True)
class Gallery:
    """Known faces: one embedding row per enrolled image; names may repeat."""

    names: tuple[str, ...]
    embeddings: np.ndarray  # (n, dim) float32
    embedder: str  # "dlib" | "facenet"

    def __post_init__(self) -> None:
        if self.embeddings.ndim != 2 or self.embeddings.shape[0] != len(self.names):
            raise GalleryError(f"{len(self.names)} names but embeddings of shape "
                               f"{self.embeddings.shape}")
        if self.embeddings.shape[1] != EMBEDDER_DIMS[self.embedder]:
            raise GalleryError(f"{self.embedder} gallery with {self.embeddings.shape[1]}-d rows")

    @property
    def people(self) -> list[str]:
        return sorted(set(self.names))


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """The course pickle holds only builtins and numpy arrays; refuse anything else."""

    _ALLOWED = frozenset({
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"), ("numpy", "dtype"),
        ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    })

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"gallery pickle may not reference {module}.{name}")


#: what a gallery is, for the error that says a file is not one.
GALLERY_FORMATS = ("a gallery is either the course's `encoding` pickle ({'name': [names], "
                   "'encoding': [128-d arrays]}, dlib) or a facenet data.pt "
                   "(torch.save([[1x512 tensors], [names]])); "
                   "`python -m lambda_image gallery enroll` makes one from photos")


def not_a_gallery(path: Path, what: str) -> GalleryError:
    return GalleryError(f"{path} is not a gallery ({what}): {GALLERY_FORMATS}")


def load_gallery(path: Path | str) -> Gallery:
    """Read either format; the format (not the file name) decides the embedder."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise GalleryError(f"cannot read gallery {path}: {exc}") from exc
    if data[:4] == _ZIP_MAGIC:
        return _load_facenet(data, path)
    return _load_dlib(data, path)


def _load_dlib(data: bytes, path: Path) -> Gallery:
    try:
        obj = _NumpyOnlyUnpickler(io.BytesIO(data)).load()
    except pickle.UnpicklingError as exc:
        if "may not reference" in str(exc):  # a pickle, of something else: say what it held
            raise not_a_gallery(path, f"a pickle that {str(exc).removeprefix('gallery pickle ')}"
                                ) from exc
        raise not_a_gallery(path, "neither a pickle nor a torch file") from exc
    except Exception as exc:  # pickle raises a zoo of types for foreign bytes
        raise not_a_gallery(path, "neither a pickle nor a torch file") from exc
    if not isinstance(obj, dict) or not {"name", "encoding"} <= obj.keys():
        held = (f"a dict with keys {sorted(map(str, obj))[:5]}" if isinstance(obj, dict)
                else f"a pickled {type(obj).__name__}")
        raise not_a_gallery(path, f"{held}, not 'name' and 'encoding'")
    names = tuple(str(n) for n in obj["name"])
    rows = np.asarray([np.asarray(e, dtype=np.float32).reshape(-1) for e in obj["encoding"]])
    return Gallery(names=names, embeddings=rows.reshape(len(names), -1), embedder="dlib")


def _load_facenet(data: bytes, path: Path) -> Gallery:
    """A `data.pt`, read without torch (lambda_image.torch_file): the ONNX runtime has none."""
    from lambda_image import torch_file

    try:
        obj = torch_file.load(data)
    except torch_file.TorchFileError as exc:
        raise not_a_gallery(path, f"a zip file that is not a torch file we read: {exc}") from exc
    except Exception as exc:  # unpickling foreign bytes raises a zoo of types
        raise not_a_gallery(path, "a zip file that is not a torch file") from exc
    if not (isinstance(obj, (list, tuple)) and len(obj) == 2):
        raise not_a_gallery(path, f"a torch file holding a {type(obj).__name__}, not "
                                  "[embeddings, names]")
    embeddings, names = obj
    if not (isinstance(embeddings, (list, tuple)) and isinstance(names, (list, tuple))):
        raise not_a_gallery(path, "a torch file holding [embeddings, names] not as two lists")
    rows = [np.asarray(e, dtype=np.float32).reshape(-1) for e in embeddings]
    if len(rows) != len(names):
        raise GalleryError(f"{path}: {len(rows)} embeddings but {len(names)} names")
    matrix = np.asarray(rows, dtype=np.float32).reshape(len(rows), -1)
    return Gallery(names=tuple(str(n) for n in names), embeddings=matrix, embedder="facenet")


def save_gallery(gallery: Gallery, path: Path | str) -> Path:
    """Write in the format that belongs to the gallery's embedder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if gallery.embedder == "dlib":
        payload = {"name": list(gallery.names),
                   "encoding": [row.astype(np.float64) for row in gallery.embeddings]}
        path.write_bytes(pickle.dumps(payload))
    else:
        import torch

        rows = [torch.from_numpy(row.copy()).reshape(1, -1) for row in gallery.embeddings]
        torch.save([rows, list(gallery.names)], path)
    return path


def inspect_gallery(gallery: Gallery) -> dict[str, Any]:
    """A JSON-able summary: embedder, size, people with their image counts, norms."""
    norms = np.linalg.norm(gallery.embeddings, axis=1) if len(gallery.names) else np.zeros(0)
    return {
        "embedder": gallery.embedder,
        "dim": int(gallery.embeddings.shape[1]),
        "entries": len(gallery.names),
        "people": dict(sorted(Counter(gallery.names).items())),
        "norm_min": round(float(norms.min()), 4) if norms.size else None,
        "norm_max": round(float(norms.max()), 4) if norms.size else None,
    }


def enrollment_images(images_dir: Path) -> list[tuple[str, Path]]:
    """(person, image) pairs from DIR/<person>/*.jpg|*.jpeg|*.png, sorted."""
    pairs = [(person.name, image)
             for person in sorted(p for p in Path(images_dir).iterdir() if p.is_dir())
             for image in sorted(person.iterdir()) if image.suffix.lower() in IMAGE_SUFFIXES]
    if not pairs:
        raise GalleryError(f"no images under {images_dir}/<person>/*.jpg|*.png")
    return pairs


def enroll(images: Sequence[tuple[str, Path]], *, detector: Any, embedder: Any) -> Gallery:
    """One embedding per image from its largest face; images without a face are skipped (logged)."""
    names: list[str] = []
    rows: list[np.ndarray] = []
    for person, image_path in images:
        with Image.open(image_path) as im:
            image = im.convert("RGB")
        rgb = np.ascontiguousarray(np.asarray(image))
        scale = min(1.0, ENROLL_DETECT_SIDE / max(image.size))
        small = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))),
                             Image.BOX) if scale < 1.0 else image
        faces = detector.detect(small, scale=scale)
        if not faces:
            log.warning("gallery.enroll_no_face", person=person, image=str(image_path))
            continue
        rows.append(embedder.embed(rgb, faces[:1])[0])
        names.append(person)
    if not rows:
        raise GalleryError("no face found in any enrolment image")
    return Gallery(names=tuple(names), embeddings=np.asarray(rows, dtype=np.float32),
                   embedder=embedder.name)
