"""The function's per-process singletons (settings, models, AWS clients), built once per
execution environment: what every entry point in :mod:`lambda_image.handlers` and
:mod:`lambda_image.camera` is handed."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import structlog

from lambda_image import logs
from lambda_image.camera_tracks import CameraTracks
from lambda_image.config import FunctionSettings
from lambda_image.recognize import Recognizer, detector_from_settings
from lambda_image.records import StudentRecords

log = structlog.get_logger()

#: guards the models built on first use (a threaded local worker serves several invocations)
_build_lock = threading.RLock()


@dataclass
class Runtime:
    """Per-process singletons: settings, the models, boto3 clients.

    `recognizer` is None in a process that only detects (detect_handler's): it is built the
    first time something needs it (`recognition()`).
    """

    settings: FunctionSettings
    recognizer: Recognizer | None
    s3: Any
    sqs: Any
    records: StudentRecords
    detector: Any = None  # lambda_image.detection.FaceDetector when built on its own
    #: the cameras' recent frames (CAMERA_TRACKS_TABLE); None: every frame is judged alone
    tracks: CameraTracks | None = None

    @classmethod
    def build(cls, settings: FunctionSettings | None = None, *,
              recognition: bool = True) -> Runtime:
        import boto3

        settings = settings or FunctionSettings.from_env()
        logs.configure(json_lines=settings.log_json)
        recognizer = Recognizer.from_settings(settings) if recognition else None
        session = boto3.session.Session()
        if recognizer is not None:
            _log_models(settings, recognizer)
        dynamodb = session.client("dynamodb")
        tracks = CameraTracks(dynamodb, settings.camera_tracks_table,
                              max_age_s=settings.camera_track_max_age_s) \
            if settings.camera_tracks_table else None
        return cls(settings=settings, recognizer=recognizer,
                   s3=session.client("s3"), sqs=session.client("sqs"),
                   records=StudentRecords(dynamodb, settings.students_table), tracks=tracks)

    def recognition(self) -> Recognizer:
        if self.recognizer is None:
            with _build_lock:
                if self.recognizer is None:
                    self.recognizer = Recognizer.from_settings(self.settings)
        return self.recognizer

    def face_detector(self) -> Any:
        """The recognizer's detector, or one of its own (detection needs no gallery models)."""
        if self.recognizer is not None:
            return self.recognizer.detector
        if self.detector is None:
            with _build_lock:
                if self.detector is None:
                    self.detector = detector_from_settings(self.settings)
        return self.detector


def _log_models(settings: FunctionSettings, recognizer: Recognizer) -> None:
    """One line at init: which runtime runs which models; and when the export holds no facenet
    network (an image built without vggface2 weights), that it serves dlib galleries only."""
    facenet = None
    if settings.inference_runtime == "onnx":
        from lambda_image import onnx_models

        facenet = onnx_models.ModelDir(settings.require_model_dir()).has(onnx_models.FACENET)
        if not facenet:
            log.info("function.dlib_only", model_dir=str(settings.model_dir),
                     reason="no facenet model in the export (built without vggface2 weights): "
                            "dlib galleries only")
    log.info("function.init", runtime=settings.inference_runtime,
             threads=settings.inference_threads, embedder=recognizer.embedder.name,
             gallery_entries=len(recognizer.gallery.names), facenet_model=facenet)
