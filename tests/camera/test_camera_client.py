"""The camera client's own parts, without a cloud: frames, expected results, the summary's
statistics, the release delay of foreign answers, the signing region, and usage errors."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from camera.answers import release_delay_s
from camera.cli import EXIT_USAGE, main
from camera.expected import ExpectedError, expected_for, read_expected
from camera.frames import Frame, image_frames, video_frames
from camera.report import frame_line, summary
from camera.run import CameraNumbering, FrameResult, RunReport, SendSettings
from camera.transport import url_region


def test_every_15th_frame_of_a_course_clip_as_jpeg(course_data: Path) -> None:
    # test_0 is 1 s at 24 fps... whatever its length, frames 0, 15, 30, ... and nothing else
    frames = list(video_frames(course_data / "videos" / "test_0.mp4", every=15))
    every_one = list(video_frames(course_data / "videos" / "test_0.mp4", every=1))
    assert [f.filename for f in frames] == [f"test_0_{i:05d}.jpg"
                                            for i in range(0, len(every_one), 15)]
    assert all(f.data[:3] == b"\xff\xd8\xff" and f.source == "test_0" for f in frames)


def test_images_of_a_folder_by_name(tmp_path: Path) -> None:
    (tmp_path / "b.png").write_bytes(b"png")
    (tmp_path / "a.JPG").write_bytes(b"jpg")
    (tmp_path / "notes.txt").write_text("not an image")
    assert [(f.filename, f.data, f.source) for f in image_frames(tmp_path)] == [
        ("a.JPG", b"jpg", "a"), ("b.png", b"png", "b")]


def test_expected_results_in_the_course_format(tmp_path: Path) -> None:
    csv = tmp_path / "expected.csv"
    csv.write_text("Image,Results\ntest_00,president_trump\ntest_6,floki\n")
    expected = read_expected(csv)
    assert expected_for(Frame("test_00.jpg", b"", "test_00"), expected) == "president_trump"
    assert expected_for(Frame("test_6_00015.jpg", b"", "test_6"), expected) == "floki"
    assert expected_for(Frame("other.jpg", b"", "other"), expected) is None
    bad = tmp_path / "bad.csv"
    bad.write_text("video,name\nx,y\n")
    with pytest.raises(ExpectedError, match="Image,Results"):
        read_expected(bad)


def _result(latency: float | None, result: str | None = "mr_bean",
            expected: str | None = "mr_bean") -> FrameResult:
    return FrameResult(frame=Frame("f.jpg", b"", "f"), request_id="r", expected=expected,
                       result=result, latency_s=latency,
                       error=None if result else "HTTP 400: not an image")


def test_the_summary_counts_and_latency_percentiles() -> None:
    results = [_result(i / 100) for i in range(1, 101)]  # 0.01 .. 1.00 s
    results += [_result(0.5, "unknown_person"), _result(None, None)]
    report = RunReport(results=results, duration_s=12.5)
    stats = report.latency_stats()
    assert stats["p50"] == pytest.approx(0.50, abs=0.011)
    assert stats["p95"] == pytest.approx(0.95, abs=0.011)
    assert stats["max"] == 1.0
    text = summary(report)
    assert "Total number of requests: 102" in text
    assert "Total number of requests completed successfully: 101" in text
    assert "Total number of failed requests: 1" in text
    assert "Total number of correct predictions : 100" in text
    assert "Total number of wrong predictions: 1" in text
    assert not report.ok
    assert "WRONG (want mr_bean)" in frame_line(results[100])
    assert "FAILED: HTTP 400: not an image" in frame_line(results[101])


def test_an_unconfirmed_borderline_face_is_counted_apart_from_wrong_names() -> None:
    def answered(result: str, decision: str, nearest: str) -> FrameResult:
        r = _result(0.2, result, expected="floki")
        r.answer = {"result": result, "faces": [{"decision": decision, "nearest": nearest}]}
        return r

    results = [answered("floki", "confirmed", "floki"),
               answered("unknown_person", "unconfirmed", "floki"),  # not yet confirmed
               answered("unknown_person", "above_threshold", "floki"),  # missed: wrong
               answered("unknown_person", "unconfirmed", "vin_diesel")]  # someone else: wrong
    report = RunReport(results=results, duration_s=1.0)
    assert (report.correct, report.unconfirmed, report.wrong) == (1, 1, 2)
    assert "Total number of unconfirmed predictions: 1" in summary(report)
    assert "not yet confirmed" in frame_line(results[1])
    assert "WRONG" not in frame_line(results[1]) and "WRONG" in frame_line(results[2])
    assert "unconfirmed predictions" not in summary(RunReport(results=results[:1],
                                                              duration_s=1.0))


def _numbers(frames: list[Frame], **settings: object) -> list[tuple[str, int] | None]:
    numbering = CameraNumbering(SendSettings(url="http://x", **settings),  # type: ignore[arg-type]
                                frames)
    return [numbering.number(f) for f in frames]


def test_a_videos_frames_are_numbered_as_one_cameras_stream_and_stills_are_not() -> None:
    video = [Frame(f"v_{i}.jpg", b"", "v", stream="v") for i in range(3)]
    other = [Frame(f"w_{i}.jpg", b"", "w", stream="w") for i in range(2)]
    stills = [Frame("a.jpg", b"", "a"), Frame("b.jpg", b"", "b")]

    numbered = _numbers(video + other + video[:1])
    assert [n[1] for n in numbered if n] == [0, 1, 2, 0, 1, 3]  # repeats go on counting
    ids = {n[0] for n in numbered if n}
    assert len(ids) == 2 and all(i.startswith(("v-", "w-")) for i in ids)
    assert _numbers(video)[0] != _numbers(video)[0]  # a new camera id on every run
    assert _numbers(stills) == [None, None]
    assert _numbers(stills, camera_id="pi-1") == [("pi-1", 0), ("pi-1", 1)]
    assert _numbers(video[:1] + other[:1], camera_id="pi") == [("pi/v", 0), ("pi/w", 0)]
    assert _numbers(video, track=False) == [None, None, None]
    long = [Frame("x.jpg", b"", "x", stream="\n".join(["a" * 80] * 3))]
    (camera, _), = _numbers(long)  # type: ignore[misc]
    assert len(camera) <= 128 and camera.isprintable()


def test_a_foreign_answer_is_released_at_once_while_young_then_later_and_later() -> None:
    assert [release_delay_s(n, age_s=5, patience_s=30) for n in range(1, 7)] == [0] * 6
    assert [release_delay_s(n, age_s=31, patience_s=30) for n in range(1, 7)] == [
        0, 1, 3, 7, 10, 10]


def test_the_signing_region_comes_from_a_lambda_url() -> None:
    assert url_region("https://abc.lambda-url.eu-west-2.on.aws/", "us-east-1") == "eu-west-2"
    assert url_region("http://127.0.0.1:4000/", "us-east-1") == "us-east-1"


@pytest.fixture()
def own_logging() -> Iterator[None]:
    """main() configures structlog for its process: put back what the suite had."""
    saved = structlog.get_config()
    yield
    structlog.configure(**saved)


@pytest.mark.parametrize(("argv", "message"), [
    (["--video", "missing.mp4"], "no such video"),
    (["--images", "."], "no images in"),
    (["--images", ".", "--concurrency", "0"], "at least 1"),
    (["--images", ".", "--camera-id", "pi", "--no-camera-id"], "exclude each other"),
    (["--images", ".", "--camera-id", "p" * 129], "printable characters"),
])
def test_usage_errors_exit_2_before_anything_is_sent(argv: list[str], message: str,
                                                     capsys: pytest.CaptureFixture[str],
                                                     own_logging: None) -> None:
    code = main(["send", "--url", "http://127.0.0.1:9/", *argv])
    assert code == EXIT_USAGE
    assert message in capsys.readouterr().err
