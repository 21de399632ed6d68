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
from camera.run import FrameResult, RunReport
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
])
def test_usage_errors_exit_2_before_anything_is_sent(argv: list[str], message: str,
                                                     capsys: pytest.CaptureFixture[str],
                                                     own_logging: None) -> None:
    code = main(["send", "--url", "http://127.0.0.1:9/", *argv])
    assert code == EXIT_USAGE
    assert message in capsys.readouterr().err
