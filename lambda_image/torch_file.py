"""Read a `torch.save` file (the zip format, torch ≥ 1.6) without torch: tensors become numpy
arrays. The facenet gallery (`data.pt`: `[[tensor (1, 512), ...], [name, ...]]`) is read this way
on the ONNX runtime, which has no torch.

Only what such files hold is accepted: lists, tuples, dicts, strings, numbers, OrderedDict and
tensors of the plain numeric storage types; any other global in the pickle is refused, so
loading a file never runs code from it.
"""

from __future__ import annotations

import io
import pickle
import zipfile
from collections import OrderedDict
from typing import Any

import numpy as np

#: torch's legacy storage classes (what `torch.save` names in its pickle) → numpy dtypes.
_STORAGE_DTYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "LongStorage": np.int64, "IntStorage": np.int32, "ShortStorage": np.int16,
    "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_,
}


class TorchFileError(ValueError):
    """Not a torch zip file, or one holding more than tensors and plain data."""


def _rebuild_tensor_v2(storage: np.ndarray, offset: int, size: tuple[int, ...],
                       stride: tuple[int, ...], requires_grad: bool = False,
                       backward_hooks: Any = None, metadata: Any = None) -> np.ndarray:
    """torch._utils._rebuild_tensor_v2 for numpy: a strided view into the storage, copied."""
    itemsize = storage.dtype.itemsize
    if not size:
        return storage[offset:offset + 1].reshape(()).copy()
    view = np.lib.stride_tricks.as_strided(storage[offset:], shape=tuple(size),
                                           strides=tuple(s * itemsize for s in stride),
                                           writeable=False)
    return np.array(view)


class _StorageType:
    def __init__(self, dtype: type) -> None:
        self.dtype = np.dtype(dtype)


class _Unpickler(pickle.Unpickler):
    def __init__(self, data: bytes, archive: zipfile.ZipFile, prefix: str) -> None:
        super().__init__(io.BytesIO(data))
        self._archive = archive
        self._prefix = prefix
        self._storages: dict[str, np.ndarray] = {}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor_v2
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(_STORAGE_DTYPES[name])
        if (module, name) == ("collections", "OrderedDict"):
            return OrderedDict
        raise TorchFileError(f"torch file may not reference {module}.{name}")

    def persistent_load(self, pid: Any) -> np.ndarray:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"
                and isinstance(pid[1], _StorageType)):
            raise TorchFileError(f"unsupported persistent id {pid!r:.80}")
        _, kind, key, _location, numel = pid
        if key not in self._storages:
            raw = self._archive.read(f"{self._prefix}data/{key}")
            array = np.frombuffer(raw, dtype=kind.dtype.newbyteorder("<"))
            if array.size != numel:
                raise TorchFileError(f"storage {key}: {array.size} elements, expected {numel}")
            self._storages[key] = array
        return self._storages[key]


def load(data: bytes) -> Any:
    """The object `torch.save` wrote, with numpy arrays in place of tensors."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        pickles = [n for n in archive.namelist() if n.endswith("/data.pkl") or n == "data.pkl"]
        if len(pickles) != 1:
            raise TorchFileError("not a torch zip file (no single data.pkl)")
        prefix = pickles[0][: -len("data.pkl")]
        byteorder = f"{prefix}byteorder"
        if byteorder in archive.namelist() and archive.read(byteorder).strip() != b"little":
            raise TorchFileError("big-endian torch files are not supported")
        return _Unpickler(archive.read(pickles[0]), archive, prefix).load()
    except (zipfile.BadZipFile, KeyError, EOFError, pickle.UnpicklingError) as exc:
        raise TorchFileError(f"unreadable torch file: {exc}") from exc
