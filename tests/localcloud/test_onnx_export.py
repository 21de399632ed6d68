"""The local cloud's ONNX export: made once per set of inputs, reused, and never left half-made."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from lambda_image.onnx_models import DLIB_RESNET, ONET, PNET, PREDICTOR_5, RNET
from localcloud.cloud import LocalCloud
from localcloud.onnx_export import REPO, ExportError, export_key, exported_models


def _copy_of_the_function(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    shutil.copytree(REPO / "lambda_image", repo / "lambda_image",
                    ignore=shutil.ignore_patterns("__pycache__"))
    return repo


def test_the_key_follows_the_functions_sources(tmp_path: Path) -> None:
    repo = _copy_of_the_function(tmp_path)
    assert export_key(repo) == export_key(REPO)
    (repo / "lambda_image" / "mtcnn.py").write_text(
        (repo / "lambda_image" / "mtcnn.py").read_text() + "\n# changed\n")
    assert export_key(repo) != export_key(REPO)


def test_an_export_is_made_once_and_replaces_older_ones(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    (cache / "0123456789ab").mkdir(parents=True)  # an export of older sources
    models = exported_models(cache)
    assert models == cache / export_key()
    manifest = json.loads((models / "manifest.json").read_text())
    assert {PNET, RNET, ONET, DLIB_RESNET, PREDICTOR_5} <= set(manifest["files"])
    assert sorted(p.name for p in cache.iterdir()) == [models.name]
    # a second call takes it as it is
    stamp = (models / "manifest.json").stat().st_mtime_ns
    assert exported_models(cache) == models
    assert (models / "manifest.json").stat().st_mtime_ns == stamp


def test_a_failed_export_leaves_nothing_behind(tmp_path: Path) -> None:
    repo = _copy_of_the_function(tmp_path)
    (repo / "lambda_image" / "__main__.py").write_text(
        "import sys\nprint('no weights here')\nsys.exit(3)\n")
    cache = tmp_path / "cache"
    with pytest.raises(ExportError, match="exited 3: no weights here"):
        exported_models(cache, repo=repo)
    assert list(cache.iterdir()) == []


def test_the_workers_run_onnx_by_default_and_torch_on_request(tmp_path: Path) -> None:
    gallery = tmp_path / "gallery"
    gallery.write_bytes(b"")
    onnx = LocalCloud(gallery=gallery)
    onnx._model_dir = tmp_path / "models"  # what start() sets from exported_models()
    assert onnx._runtime_environment() == {"INFERENCE_RUNTIME": "onnx",
                                           "MODEL_DIR": str(tmp_path / "models")}
    assert LocalCloud(gallery=gallery, runtime="torch")._runtime_environment() == {
        "INFERENCE_RUNTIME": "torch"}
    assert LocalCloud(gallery=gallery, image="localhost/x:1")._runtime_environment() == {}
    with pytest.raises(ValueError, match="runtime 'tf' is not one of onnx, torch"):
        LocalCloud(gallery=gallery, runtime="tf")
