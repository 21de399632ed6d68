"""The borderline rule on real data: re-encoded copies of test_5.mp4, where the unenrolled boy beside
vin_diesel comes within the threshold of president_trump, and single frames of the course clips."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image

from bench.variants import make_source_variants
from lambda_image import confirm
from lambda_image.matching import UNKNOWN
from lambda_image.recognize import FaceResult, Recognizer
from lambda_image.video import sample_frames

#: Copies of test_5.mp4 from bench/variants.py's make_source_variants (seed 14, started on the
#: first frame): one per size from 480×270 to 1920×1080, each with its own crop, brightness and
#: scaling, picked from bench/borderline.py's measurement as copies on whose first frame the boy
#: matches president_trump within the threshold (0.54-0.59): the re-uploads that get a wrong
#: name when one frame decides. 48 is the one where he is undetected on the next sampled frame and
#: back in the band on the one after.
TEST5_COPIES = (12, 48, 44, 57, 46, 23)


@pytest.fixture(scope="session")
def test5_copies(course_data: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    out = tmp_path_factory.mktemp("test5-copies")
    variants = make_source_variants(course_data, out, "test_5.mp4", max(TEST5_COPIES) + 1,
                                    seed=14, max_offset_s=0.0, indices=TEST5_COPIES)
    return [v.path for v in variants]


def is_boy(face: FaceResult, width: int) -> bool:
    """The boy stands right of vin_diesel (face centres at 73 % and 32 % of the frame width)."""
    return (face.box[0] + face.box[2]) / 2 > width / 2


def width_of(path: Path) -> int:
    return int(path.stem.rsplit("_", 1)[1].split("x")[0])


def describe(face: FaceResult) -> str:
    per_frame = ", ".join(f"{i}:{'lost' if d is None else f'{d:.3f}'}"
                          for i, d in zip(face.frames, face.distances, strict=True))
    return (f"{face.name} ({face.decision}; nearest {face.nearest} {face.distance:.3f}, "
            f"runner-up {face.runner_up} +{face.runner_up_distance - face.distance:.3f}; "
            f"frames {per_frame})")


def test_the_bystander_is_never_named_and_vin_diesel_always(recognizer: Recognizer,
                                                             test5_copies: list[Path]) -> None:
    borderline_boys = 0
    for path in test5_copies:
        result = recognizer.recognize(path)
        boys = [f for f in result.faces if is_boy(f, width_of(path))]
        print(f"{path.name}: {result.names}, {result.frames_sampled} frames")
        for face in result.faces:
            print(f"    {'boy' if face in boys else 'vin'}: {describe(face)}")

        assert result.names[0] == "vin_diesel"
        assert set(result.names) <= {"vin_diesel", UNKNOWN}
        assert boys and all(f.name == UNKNOWN for f in boys)
        borderline_boys += any(f.decision in (confirm.CONFIRMED, confirm.UNCONFIRMED)
                               for f in boys)
    # the copies exercise the rule: on most of them the boy is within the threshold, in the band
    assert borderline_boys >= len(test5_copies) - 1


def test_without_the_rule_one_frame_names_the_boy(recognizer: Recognizer,
                                                  test5_copies: list[Path]) -> None:
    # The control: the same copies with the band set to 0 (the single-frame rule of before) hand
    # the boy a student's name, so the test above passes only because of the rule.
    one_frame = Recognizer(recognizer.gallery, detector=recognizer.detector,
                           embedder=recognizer.embedder, confirm_band=0.0)
    named = [path.name for path in test5_copies
             if "president_trump" in one_frame.recognize(path).names]
    print(f"named president_trump with one frame deciding: {named}")
    assert len(named) >= len(test5_copies) - 1


def jpeg(rgb) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def test_frame_path_names_no_one_wrongly_on_the_course_clips(recognizer: Recognizer,
                                                             course_data: Path,
                                                             expected: dict) -> None:
    # GIVEN every frame the video path would sample from each course clip, sent as a JPEG
    dropped, named, total, boys = [], 0, 0, []
    for clip, row in sorted(expected.items()):
        for frame in sample_frames(course_data / "videos" / clip, max_frames=8, max_decode_s=60):
            # WHEN each is recognised as a single image (no further frame to confirm with)
            result = recognizer.recognize_image(jpeg(frame.rgb))
            total += 1
            width = frame.rgb.shape[1]
            boy = [f for f in result.faces if clip == "test_5.mp4" and is_boy(f, width)]
            boys += [f"{clip}@{frame.index}: {describe(f)}" for f in boy]
            person = max((f for f in result.faces if f not in boy),
                         key=lambda f: (f.box[2] - f.box[0]) * (f.box[3] - f.box[1]))
            # THEN no frame names anyone but its person; a borderline one says unknown_person
            assert set(result.names) <= {row["name"], UNKNOWN}, describe(person)
            assert all(f.name == UNKNOWN for f in boy), boys[-1]
            assert person.frames == (0,), "a single image is its own and only frame"
            if person.name == row["name"]:
                named += 1
                assert person.decision in (confirm.CONFIDENT, confirm.MARGIN)
            else:
                assert person.decision == confirm.UNCONFIRMED, describe(person)
                dropped.append(f"{clip}@{frame.index}: {describe(person)}")
    print(f"frame path: {named}/{total} frames name their person; {len(dropped)} borderline "
          "without a clear margin say unknown_person:")
    print("\n".join(f"    {d}" for d in dropped))
    print("test_5's boy:\n" + "\n".join(f"    {b}" for b in boys))
    # floki (test_6, the course's closest match: 0.54-0.59, runner-up 0.11-0.16 further) is
    # borderline on every frame, so the frame path cannot name him; every other clip's person is
    # confident on all its frames
    assert all(d.startswith("test_6.mp4@") for d in dropped)
    assert named >= total - 8


@pytest.mark.parametrize("who", ["grace_hopper", "astronaut"])
def test_strangers_as_single_frames_are_unknown(recognizer: Recognizer, photos: dict,
                                                who: str) -> None:
    result = recognizer.recognize_image(photos[who].read_bytes())

    assert result.names == [UNKNOWN]
    assert all(f.decision == confirm.ABOVE_THRESHOLD for f in result.faces)
