"""The facenet path. No vggface2 weights exist on these machines, so accuracy is NOT tested here:
only that the gallery format loads, weights load from a local file, and shapes are right."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lambda_image.config import FunctionSettings
from lambda_image.embedders import FacenetEmbedder, load_inception_resnet
from lambda_image.errors import WeightsError
from lambda_image.gallery import load_gallery
from lambda_image.recognize import Recognizer


def test_course_data_pt_loads_as_facenet_gallery(shared_data: Path) -> None:
    gallery = load_gallery(shared_data / "cse546-2025" / "data.pt")

    assert gallery.embedder == "facenet"
    assert gallery.embeddings.shape == (79, 512)
    assert set(gallery.names) == {"Trump", "Biden", "Bean", "Depp", "Diesel", "Floki", "Freeman",
                                  "Obama"}
    assert np.allclose(np.linalg.norm(gallery.embeddings, axis=1), 1.0, atol=1e-4)


def test_facenet_loads_random_facenet_weights_from_local_file(random_facenet_weights: Path) -> None:
    model = load_inception_resnet(random_facenet_weights)

    assert not model.training
    assert not hasattr(model, "logits")


def test_facenet_random_facenet_weights_embeddings_have_right_shape(random_facenet_weights: Path,
                                                            recognizer: Recognizer,
                                                            photos: dict) -> None:
    from PIL import Image

    image = Image.open(photos["obama"]).convert("RGB")
    faces = recognizer.detector.detect(image)
    embedder = FacenetEmbedder(random_facenet_weights)

    vectors = embedder.embed(np.asarray(image), faces)

    assert vectors.shape == (len(faces), 512) and len(faces) >= 1
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)


def test_facenet_pipeline_runs_end_to_end_with_random_facenet_weights(shared_data: Path, course_data: Path,
                                                              random_facenet_weights: Path) -> None:
    settings = FunctionSettings(gallery_path=shared_data / "cse546-2025" / "data.pt",
                                facenet_weights=random_facenet_weights)
    recognizer = Recognizer.from_settings(settings)

    result = recognizer.recognize(course_data / "videos" / "test_4.mp4")

    assert recognizer.matcher.threshold == 0.9
    assert result.embedder == "facenet" and result.faces  # names are meaningless with random weights


def test_missing_weights_never_download(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="not found"):
        load_inception_resnet(tmp_path / "absent.pt")


def test_default_weights_path_under_torch_home(tmp_path: Path) -> None:
    settings = FunctionSettings.from_env({"TORCH_HOME": str(tmp_path)})

    assert settings.facenet_weights == tmp_path / "checkpoints" / "20180402-114759-vggface2.pt"
