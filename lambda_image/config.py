"""FunctionSettings: the function's configuration, read once from the environment."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from lambda_image import confirm
from lambda_image.errors import ConfigError

FACENET_WEIGHTS_FILE = "20180402-114759-vggface2.pt"
RUNTIMES = ("torch", "onnx")
DLIB_ENCODERS = ("torch", "onnx", "dlib")
#: how old a camera's previous frames may be and still confirm a face (CAMERA_TRACK_MAX_AGE_S)
DEFAULT_CAMERA_TRACK_MAX_AGE_S = 10.0


def default_facenet_weights(env: Mapping[str, str]) -> Path:
    """$TORCH_HOME/checkpoints/<vggface2 file>, torch's own cache layout (default ~/.cache/torch)."""
    torch_home = env.get("TORCH_HOME") or os.path.join(
        env.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "torch")
    return Path(torch_home) / "checkpoints" / FACENET_WEIGHTS_FILE


def default_cache_dir(env: Mapping[str, str]) -> Path:
    """Where derived model files are kept ($XDG_CACHE_HOME/lambda_image, default ~/.cache/...)."""
    return Path(env.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache"))) / "lambda_image"


@dataclass(frozen=True)
class FunctionSettings:
    """Everything the function reads from its environment (names as in docs/contracts.md)."""

    gallery_path: Path | None = None
    students_table: str = "students"
    output_bucket: str | None = None
    output_queue_url: str | None = None
    response_queue_url: str | None = None
    #: The camera path's two stages: the request queue detect_handler sends faces to, and the
    #: bucket for crops too large for a message (and frames a GET request names).
    request_queue_url: str | None = None
    frames_bucket: str | None = None
    #: Where a camera's recent frames are kept, so that a borderline face on a frame that names
    #: its camera can be confirmed by the frames before it (lambda_image.camera_tracks); None:
    #: every frame is judged alone. A kept frame is evidence for `camera_track_max_age_s`.
    camera_tracks_table: str | None = None
    camera_track_max_age_s: float = DEFAULT_CAMERA_TRACK_MAX_AGE_S
    #: A frame is refused above this many pixels (decoding 50 megapixels costs ~150 MB).
    max_image_pixels: int = 25_000_000
    #: An S3 object a GET request names is refused above this size (a URL body stops at 6 MB).
    max_object_bytes: int = 20 * 1024 * 1024
    #: SQS's message size limit: a request message over it has its crops moved to S3.
    max_message_bytes: int = 256 * 1024
    #: Half the side of a face crop, as a multiple of the face box's longest side (1.0: a crop
    #: twice the face, which holds everything the dlib embedder looks at around the box).
    crop_margin: float = 1.0
    crop_quality: int = 95
    #: None means the embedder's documented default (matching.DEFAULT_THRESHOLDS).
    match_threshold: float | None = None
    facenet_weights: Path | None = None
    #: Who runs the networks: "torch" (the reference; the models from their packages) or "onnx"
    #: (onnxruntime on the exported models in `model_dir`; torch is never imported).
    inference_runtime: str = "torch"
    #: Intra-op threads of either runtime.
    inference_threads: int = 1
    #: The exported models (python -m lambda_image export-onnx); required on the onnx runtime.
    model_dir: Path | None = None
    #: Who runs dlib's ResNet for a dlib gallery: None (the inference runtime), "torch", "onnx",
    #: or "dlib" itself (the slow reference).
    dlib_encoder: str | None = None
    #: Derived model files (dlib's HOG detector in its fast-loading form); None: no cache.
    model_cache_dir: Path | None = None
    max_frames: int = 8
    max_decode_seconds: float = 2.0
    #: Longest side of the downscaled frame MTCNN sees, and the smallest face (px) it looks for there.
    detect_max_side: int = 400
    min_face_px: int = 24
    #: MTCNN's image-pyramid step (facenet's default 0.709); smaller = fewer scales, faster.
    detect_factor: float = 0.709
    #: The decision rule (lambda_image.confirm): a face within the threshold and within
    #: `confirm_fraction` of its identity's spacing in the gallery is named at once; any other
    #: face within the threshold only when `confirm_agree` of `confirm_frames` sampled frames
    #: agree. inf: the threshold alone decides (the rule off).
    confirm_fraction: float = confirm.DEFAULT_FRACTION
    confirm_frames: int = confirm.DEFAULT_WINDOW
    confirm_agree: int = confirm.DEFAULT_AGREE
    #: Log lines as JSON (LOG_FORMAT=json|console; JSON by default under a Lambda runtime,
    #: which sets AWS_LAMBDA_RUNTIME_API).
    log_json: bool = False

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> FunctionSettings:
        env = os.environ if env is None else env

        def opt(name: str) -> str | None:
            value = env.get(name, "").strip()
            return value or None

        def num(name: str, kind: type, default: float, *, zero: bool = False) -> float | int:
            raw = opt(name)
            if raw is None:
                return default
            try:
                value = kind(raw)
            except ValueError as exc:
                raise ConfigError(f"{name}={raw!r} is not a valid {kind.__name__}") from exc
            if value < 0 or (value == 0 and not zero):
                raise ConfigError(f"{name} must be {'≥ 0' if zero else 'positive'}, got {raw!r}")
            return value

        runtime = (opt("INFERENCE_RUNTIME") or "torch").lower()
        if runtime not in RUNTIMES:
            raise ConfigError(f"INFERENCE_RUNTIME={runtime!r} must be one of {', '.join(RUNTIMES)}")
        model_dir = opt("MODEL_DIR")
        if runtime == "onnx" and not model_dir:
            raise ConfigError("INFERENCE_RUNTIME=onnx needs MODEL_DIR (the exported models: "
                              "python -m lambda_image export-onnx --out DIR)")
        dlib_encoder = (opt("DLIB_ENCODER") or "").lower() or None
        if dlib_encoder is not None and dlib_encoder not in DLIB_ENCODERS:
            raise ConfigError(f"DLIB_ENCODER={dlib_encoder!r} must be one of "
                              f"{', '.join(DLIB_ENCODERS)}")
        # TORCH_NUM_THREADS is the setting's older name, still read when the new one is unset.
        threads_var = "INFERENCE_THREADS" if opt("INFERENCE_THREADS") else "TORCH_NUM_THREADS"
        factor = float(num("DETECT_FACTOR", float, 0.709))
        if factor >= 1:
            raise ConfigError(f"DETECT_FACTOR must be below 1, got {factor}")
        for retired in ("CONFIRM_BAND", "CONFIRM_MARGIN"):
            if opt(retired) is not None:
                raise ConfigError(f"{retired} is gone: the decision rule scales with the gallery "
                                  "now (CONFIRM_FRACTION, docs/decision-rule.md)")
        fraction = float(num("CONFIRM_FRACTION", float, confirm.DEFAULT_FRACTION))
        window = int(num("CONFIRM_FRAMES", int, confirm.DEFAULT_WINDOW))
        agree = int(num("CONFIRM_AGREE", int, min(confirm.DEFAULT_AGREE, window)))
        if agree > window:
            raise ConfigError(f"CONFIRM_AGREE={agree} exceeds CONFIRM_FRAMES={window}")
        quality = int(num("CROP_QUALITY", int, 95))
        if quality > 100:
            raise ConfigError(f"CROP_QUALITY is a JPEG quality, 1..100; got {quality}")
        log_format = (opt("LOG_FORMAT") or
                      ("json" if opt("AWS_LAMBDA_RUNTIME_API") else "console")).lower()
        if log_format not in ("json", "console"):
            raise ConfigError(f"LOG_FORMAT={log_format!r} must be 'json' or 'console'")
        gallery = opt("GALLERY_PATH")
        weights = opt("FACENET_WEIGHTS")
        return cls(
            gallery_path=Path(gallery) if gallery else None,
            students_table=opt("STUDENTS_TABLE") or "students",
            output_bucket=opt("OUTPUT_BUCKET"),
            output_queue_url=opt("OUTPUT_QUEUE_URL"),
            response_queue_url=opt("RESPONSE_QUEUE_URL"),
            request_queue_url=opt("REQUEST_QUEUE_URL"),
            frames_bucket=opt("FRAMES_BUCKET"),
            camera_tracks_table=opt("CAMERA_TRACKS_TABLE"),
            camera_track_max_age_s=float(num("CAMERA_TRACK_MAX_AGE_S", float,
                                             DEFAULT_CAMERA_TRACK_MAX_AGE_S)),
            max_image_pixels=int(num("MAX_IMAGE_PIXELS", int, 25_000_000)),
            max_object_bytes=int(num("MAX_OBJECT_BYTES", int, 20 * 1024 * 1024)),
            max_message_bytes=int(num("MAX_MESSAGE_BYTES", int, 256 * 1024)),
            crop_margin=float(num("CROP_MARGIN", float, 1.0)),
            crop_quality=quality,
            match_threshold=float(num("MATCH_THRESHOLD", float, 0.0)) or None,
            facenet_weights=Path(weights) if weights else default_facenet_weights(env),
            inference_runtime=runtime,
            inference_threads=int(num(threads_var, int, 1)),
            model_dir=Path(model_dir) if model_dir else None,
            dlib_encoder=dlib_encoder,
            model_cache_dir=Path(opt("MODEL_CACHE_DIR") or default_cache_dir(env)),
            max_frames=int(num("MAX_FRAMES", int, 8)),
            max_decode_seconds=float(num("MAX_DECODE_SECONDS", float, 2.0)),
            detect_max_side=int(num("DETECT_MAX_SIDE", int, 400)),
            min_face_px=int(num("MIN_FACE_PX", int, 24)),
            detect_factor=factor,
            confirm_fraction=fraction,
            confirm_frames=window,
            confirm_agree=agree,
            log_json=log_format == "json",
        )

    @property
    def dlib_runner(self) -> str:
        """Who runs dlib's ResNet: DLIB_ENCODER when set, else the inference runtime."""
        return self.dlib_encoder or self.inference_runtime

    def require_model_dir(self) -> Path:
        if self.model_dir is None:
            raise ConfigError("MODEL_DIR is not set (the exported models the onnx runtime runs)")
        return self.model_dir

    def require_gallery(self) -> Path:
        if self.gallery_path is None:
            raise ConfigError("GALLERY_PATH is not set")
        return self.gallery_path
