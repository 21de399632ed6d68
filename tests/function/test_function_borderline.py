"""The decision rule on real data (lambda_image.confirm, docs/decision-rule.md): re-encoded copies
of test_5.mp4, where the unenrolled boy beside vin_diesel comes within the threshold of
president_trump; single frames of the course clips, which one frame now names; and strangers as
photos, crops and clips, whom nothing names. Each guard has a control that loosens the rule and
sees the wrong name appear, so none of them can pass for want of a hard case."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
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
    # The control: the same copies with the rule off (the threshold alone, as before any rule)
    # hand the boy a student's name, so the test above passes only because of the rule.
    one_frame = Recognizer(recognizer.gallery, detector=recognizer.detector,
                           embedder=recognizer.embedder, confirm_fraction=float("inf"))
    named = [path.name for path in test5_copies
             if "president_trump" in one_frame.recognize(path).names]
    print(f"named president_trump with one frame deciding: {named}")
    assert len(named) >= len(test5_copies) - 1


def jpeg(rgb, quality: int = 90) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def test_one_frame_names_every_course_clip_s_person_and_never_the_boy(
        recognizer: Recognizer, course_data: Path, expected: dict) -> None:
    # GIVEN every frame the video path would sample from each course clip, sent as a JPEG
    named, total, boys = 0, 0, []
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
            # THEN it names its person at once, and nobody else (a second face, such as test_4's
            # in the background, is unknown_person)
            assert result.names[0] == row["name"], describe(person)
            assert set(result.names) <= {row["name"], UNKNOWN}, describe(person)
            assert all(f.name == UNKNOWN for f in boy), boys[-1]
            assert person.frames == (0,), "a single image is its own and only frame"
            assert person.decision == confirm.CONFIDENT, describe(person)
            assert person.distance <= person.bound
            named += 1
    print(f"frame path: {named}/{total} frames name their person at once")
    print("test_5's boy:\n" + "\n".join(f"    {b}" for b in boys))
    # floki (test_6, the course's closest match: 0.54-0.59) is named on every one of his frames:
    # at most 0.78 of his identity's spacing (0.761) from him, where no unenrolled face came
    assert named == total == 64


def test_the_video_path_decides_every_course_clip_on_its_first_frame(
        recognizer: Recognizer, course_data: Path, expected: dict) -> None:
    for clip, row in sorted(expected.items()):
        result = recognizer.recognize(course_data / "videos" / clip)

        (person,) = [f for f in result.faces if f.name == row["name"]]
        others = [f for f in result.faces if f is not person]
        print(f"{clip}: {describe(person)}; {result.frames_sampled} frames; others: "
              + "; ".join(describe(f) for f in others))
        assert result.names[0] == row["name"] and person.decision == confirm.CONFIDENT, clip
        assert all(f.name == UNKNOWN for f in others)  # test_5's boy: 0.602, above the threshold
        # one frame sampled, none more to confirm (test_6 decoded a second one for floki before)
        assert (person.frame, result.frames_sampled, result.extra_frames) == (0, 1, 0), clip


# -- people in no gallery: every stranger the sample data has, as a photo, a crop and a clip ------

STRANGERS = ("grace_hopper", "astronaut", "tom_hanks", "group")


@pytest.fixture(scope="module")
def strangers(photos: dict[str, Path], tmp_path_factory: pytest.TempPathFactory,
              ) -> tuple[dict[str, bytes], dict[str, Path]]:
    """Each stranger's photo as it is, cropped to its middle and scaled down, and darkened (as
    JPEGs), and filmed as a clip."""
    from PIL import ImageEnhance

    from sampledata.render import render_still_clip

    images: dict[str, bytes] = {}
    clips: dict[str, Path] = {}
    root = tmp_path_factory.mktemp("strangers")
    for who in STRANGERS:
        with Image.open(photos[who]) as opened:
            image = opened.convert("RGB")
        w, h = image.size
        middle = image.crop((w // 10, h // 10, w - w // 10, h - h // 10))
        for what, variant in ((who, image),
                              (f"{who} cropped, half size",
                               middle.resize((middle.width // 2, middle.height // 2))),
                              (f"{who} darker", ImageEnhance.Brightness(image).enhance(0.8))):
            images[what] = jpeg(np.asarray(variant), quality=85)
        clips[f"{who} as a clip"] = render_still_clip(root / f"{who}.mp4", [photos[who]],
                                                      seconds=0.5)
    return images, clips


def strangers_named(recognizer: Recognizer, strangers: tuple[dict[str, bytes], dict[str, Path]],
                    ) -> tuple[list[str], int, list[str]]:
    """(every stranger face a name was given to, how many stranger faces were judged, the
    nearest identities of those within the threshold)."""
    images, clips = strangers
    named, faces, near = [], 0, []
    results = {what: recognizer.recognize_image(data) for what, data in images.items()}
    results.update({what: recognizer.recognize(clip) for what, clip in clips.items()})
    for what, result in results.items():
        for face in result.faces:
            faces += 1
            if face.name != UNKNOWN:
                named.append(f"{what}: {describe(face)}")
            if face.distance <= recognizer.rule.threshold:
                near.append(f"{what}: {describe(face)}")
    return named, faces, near


def test_no_stranger_is_ever_named(recognizer: Recognizer, strangers: tuple) -> None:
    named, faces, near = strangers_named(recognizer, strangers)

    print(f"{faces} stranger faces; within the threshold of someone:\n    " + "\n    ".join(near))
    assert not named, named
    assert faces >= 30  # the group photo's six, every variant and clip
    # some of them come within the threshold: the rule, not the threshold, keeps them unnamed
    assert len(near) >= 3, near


def test_with_the_rule_loosened_a_stranger_gets_a_name(recognizer: Recognizer,
                                                       strangers: tuple) -> None:
    # The control: the same strangers under a rule 10 % looser (0.9 of the spacing) or off
    for fraction in (0.9, float("inf")):
        loose = Recognizer(recognizer.gallery, detector=recognizer.detector,
                           embedder=recognizer.embedder, confirm_fraction=fraction)

        named, _, _ = strangers_named(loose, strangers)

        print(f"fraction {fraction}: " + "\n    ".join(named))
        assert named, f"fraction {fraction} named no stranger: the test above proves nothing"
