"""The exported models the local cloud's workers run on the ONNX runtime, cached by their inputs.

What we ship is the image, whose function runs onnxruntime on the models ``python -m lambda_image
export-onnx`` wrote into its /opt/models: torch is never imported there. The local cloud's warm
workers run the same way (``INFERENCE_RUNTIME=onnx``, ``MODEL_DIR`` = this export), so
``make demo``, ``local up`` and the integration tier run the runtime we ship, and start in about a
second instead of importing torch in every worker.

The export needs torch (it is in the venv) and takes about 6 s. It is kept under
``.cache/onnx-models/<key>``, the key a hash of the function's sources and of the versions of the
packages the models come from, and written to a temporary directory first, then renamed: an
interrupted export leaves nothing a later run would take for a finished one, and two runs that
export at once both end with the same complete directory.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from localcloud.machines.images import file_sha256, model_source_versions

REPO = Path(__file__).resolve().parents[1]
#: Where exports are kept (ignored by git, beside the demo's sample data).
DEFAULT_CACHE = REPO / ".cache" / "onnx-models"
#: What an export takes here is about 6 s; a hung one is stopped well before a test's timeout.
EXPORT_TIMEOUT_S = 300.0
_MANIFEST = "manifest.json"


class ExportError(RuntimeError):
    """export-onnx failed; the message carries the end of its output."""


def export_key(repo: Path = REPO) -> str:
    """A hash of what the export is made from: the function's sources and the model packages."""
    sources = sorted(p for p in (repo / "lambda_image").rglob("*.py")
                     if "__pycache__" not in p.parts)
    blob = json.dumps({"files": {str(p.relative_to(repo)): file_sha256(p) for p in sources},
                       "model_sources": model_source_versions()},
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def exported_models(cache_dir: Path = DEFAULT_CACHE, *, repo: Path = REPO,
                    timeout_s: float = EXPORT_TIMEOUT_S) -> Path:
    """The export for this checkout: the cached one, or a new one (then older ones are removed)."""
    key = export_key(repo)
    target = cache_dir / key
    if (target / _MANIFEST).is_file():
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=cache_dir))
    try:
        out = staging / "models"
        proc = subprocess.run([sys.executable, "-m", "lambda_image", "export-onnx",
                               "--out", str(out)], cwd=repo, capture_output=True, text=True,
                              timeout=timeout_s, check=False,
                              env={**os.environ, "PYTHONPATH": str(repo)})
        if proc.returncode != 0 or not (out / _MANIFEST).is_file():
            raise ExportError(f"export-onnx exited {proc.returncode}: "
                              f"{(proc.stdout + proc.stderr)[-1500:]}")
        try:
            out.rename(target)
        except OSError:
            if not (target / _MANIFEST).is_file():  # not another run's finished export
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    for older in cache_dir.iterdir():
        if older.name != key and not older.name.startswith("."):
            shutil.rmtree(older, ignore_errors=True)
    return target
