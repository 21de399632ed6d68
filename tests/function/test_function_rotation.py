"""Rotation metadata: a portrait phone clip stores its frames sideways plus a display matrix."""

from __future__ import annotations

from pathlib import Path

import av
import pytest
from PIL import Image

from lambda_image.recognize import Recognizer
from sampledata.render import render_still_clip, set_display_rotation


@pytest.fixture(scope="module")
def sideways_clip(photos: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Obama's photo stored a quarter turn counter-clockwise, as a sensor in portrait would."""
    folder = tmp_path_factory.mktemp("rotation")
    sideways = folder / "obama_sideways.jpg"
    with Image.open(photos["obama"]) as img:
        img.convert("RGB").transpose(Image.Transpose.ROTATE_90).save(sideways)
    return render_still_clip(folder / "sideways.mp4", [sideways], size=(480, 640))


def test_display_matrix_is_applied_before_detection(recognizer: Recognizer, sideways_clip: Path,
                                                    tmp_path: Path) -> None:
    # GIVEN the sideways frames tagged with the display matrix that turns them upright
    tagged = tmp_path / "tagged.mp4"
    tagged.write_bytes(sideways_clip.read_bytes())
    set_display_rotation(tagged, 90)
    with av.open(str(tagged)) as container:
        assert next(container.decode(video=0)).rotation == -90
    # WHEN recognised THEN the person is found in the upright picture
    result = recognizer.recognize(tagged)
    assert result.names == ["president_obama"]
    assert result.faces[0].distance < 0.5
    _x1, _y1, x2, y2 = result.faces[0].box
    assert x2 <= 640 and y2 <= 480  # boxes are in display (rotated) coordinates


def test_without_the_matrix_the_sideways_face_is_not_found(recognizer: Recognizer,
                                                           sideways_clip: Path) -> None:
    # The control: the same pixels untagged do not give Obama, so the test above passes only
    # because the rotation is honoured. (MTCNN's best candidates on the sideways frames score
    # 0.77-0.78 against the 0.9 it needs, so this is `no_persons_found`; but one full run here
    # found a face in them and answered `unknown_person`, a cause not found: the point of the
    # control is that the person is not named.)
    result = recognizer.recognize(sideways_clip)
    assert "president_obama" not in result.names
    assert all(face.name != "president_obama" for face in result.faces)
