"""`make bench`'s image benchmark at its smallest, so it cannot rot: one start of each runtime
and one round over the course clips, through the built image."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import bench_image

pytestmark = pytest.mark.integration


def test_image_bench_compares_the_runtimes_in_one_run(function_image: str, course_data: Path,
                                                      tmp_path: Path) -> None:
    assert bench_image.main(["--data", str(course_data), "--repeat", "1", "--warm", "1",
                             "--out", str(tmp_path)]) == 0

    report = json.loads((tmp_path / "image.json").read_text())
    assert report["image"] == function_image
    for kind in ("torch", "onnx", "image"):
        measured = report["kinds"][kind]
        assert len(measured["warm_ms_per_clip"]) == 8
        assert measured["cold_s_median"] > 0 and measured["peak_rss_mb"] > 50
    # the image's function never loads torch: it stays well below the torch worker's memory
    assert report["ratios_vs_torch"]["image"]["peak_rss"] < 0.6
    assert "| cold start" in (tmp_path / "image.md").read_text()
