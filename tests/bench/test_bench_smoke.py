"""The benchmark code path at a tiny scale, so `make bench` cannot rot between runs: the real daemon
against the synthetic function (a few messages, concurrency 2), then the report built from it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import orchestration, placement, private_function, report

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def test_orchestration_bench_quick_run_writes_results_and_report(tmp_path: Path) -> None:
    # GIVEN the orchestration bench at its smallest (2 slots, 0.2 s function, 100 no-op messages:
    # enough for every process's CPU to read above one 10 ms clock tick)
    # WHEN it runs end to end
    assert orchestration.main(["--quick", "--out", str(tmp_path)]) == 0
    # THEN every message came back as a result file, and the numbers are sane
    data = json.loads((tmp_path / "orchestration.json").read_text())
    assert set(data["sites"]) == {"moto", "lean_sqs"}  # queues on moto, and on the lean SQS
    for site, measured in data["sites"].items():
        (point,) = measured["scaling"]
        assert point["concurrency"] == 2 and point["messages"] == 4
        assert 0 < point["efficiency"] <= 1.05
        (noop,) = measured["noop"]
        assert noop["messages"] == 100 and noop["throughput_per_s"] > 0
        # the daemon's and the queue server's CPU were read (≥ 0.1 ms per message each: ≥ 1 tick)
        assert noop["daemon_cpu_ms_per_message"] >= 0.1
        assert noop[f"{site}_cpu_ms_per_message"] >= 0.1
    assert data["idle"]["torch_mapped"] is False and data["idle"]["rss_mb"] > 0
    # AND the report renders from whatever JSON is there
    report.main(["--out", str(tmp_path), "--no-plots"])
    assert "Orchestration" in (tmp_path / "REPORT.md").read_text()


def test_placement_bench_quick_run_places_and_prices_and_the_report_shows_it(
        tmp_path: Path) -> None:
    # GIVEN the placement bench at its smallest (12 messages; bursting at once, and never)
    assert placement.main(["--quick", "--out", str(tmp_path)]) == 0
    data = json.loads((tmp_path / "placement.json").read_text())
    # THEN bursting at once sent work to aws and finished sooner than never bursting, which
    # ran everything privately and spent nothing on aws
    at_once, never = data["burst"]["burst 0 s"], data["burst"]["never"]
    assert at_once["messages"] == never["messages"] == 12
    assert at_once["aws_invocation_share"] > 0 and at_once["aws_cost_usd"] > 0
    assert never["aws_invocation_share"] == 0 and never["private_share"] == 1
    assert at_once["completion_s"] < never["completion_s"]
    assert data["steady"]["never"]["stream"]["messages"] == 9
    report.main(["--out", str(tmp_path), "--no-plots"])
    assert "Placement: private first" in (tmp_path / "REPORT.md").read_text()


def test_private_function_bench_runs_the_image_on_both_services_with_the_same_answers(
        tmp_path: Path, course_data: Path) -> None:
    # GIVEN the shipped image on the local cloud and, made with CreateFunction, on the private
    # service (SigV4 verified); one warm round of the course clips
    assert private_function.main(["--data", str(course_data), "--rounds", "1",
                                  "--out", str(tmp_path)]) == 0
    data = json.loads((tmp_path / "private_function.json").read_text())
    # THEN both answered every clip alike, and both times were measured
    assert data["same_answers"] is True and data["clips"] == 8
    assert data["right"] == {"local_cloud": 8, "private": 8}
    assert all(ms > 0 for ms in data["warm_ms_median"].values())
    assert data["private_over_local_cloud"] > 0
    report.main(["--out", str(tmp_path), "--no-plots"])
    assert "The real function on the private service" in (tmp_path / "REPORT.md").read_text()


def test_report_says_how_often_borderline_faces_needed_extra_frames() -> None:
    part = {"course_clips": 8, "course_with_extra_frames": 1, "variants": 100,
            "variants_right_first": 100, "variants_with_extra_frames": 17,
            "variants_median_ms": 151.0}

    (line, _blank) = report.borderline_lines(part)

    assert line.startswith("Borderline faces confirmed on further frames: 1 of 8 course clips")
    assert "17 of 100 variants" in line and "100/100 named" in line
    assert report.borderline_lines(None) == []


def test_report_renders_the_function_a_b_per_clip() -> None:
    clip = {"base_ms": 168.6, "new_ms": 83.2, "ratio": 0.493, "paired_ratio": 0.476,
            "base_names": ["floki"], "new_names": ["floki"], "new_extra_frames": 0}
    ab = {"rounds": 15, "per_clip": {"test_6.mp4": clip},
          "overall_median_ms": {"base": 95.9, "new": 88.9}, "overall_ratio": 0.927,
          "paired_ratio_all_calls": 0.955,
          "variants": {"base": {"videos": 100, "right_first": 100, "with_extra_frames": 19,
                                "median_ms": 87.4},
                       "new": {"videos": 100, "right_first": 100, "with_extra_frames": 0,
                               "median_ms": 83.0}}, "variants_ratio": 0.95}

    text = "\n".join(report.ab_section(ab))

    assert "| test_6.mp4 | 168.6 | 83.2 | ×0.49 | ×0.48 | floki | 0 |" in text
    assert "videos sampling extra frames 19 → 0" in text


def test_camera_bench_quick_run_writes_results_and_its_report_section(
        tmp_path: Path, course_data: Path) -> None:
    from bench import bench_camera

    # GIVEN the camera bench at its smallest: 8 frames, flat out only
    # WHEN it runs end to end (the local cloud's camera path, the camera client's code)
    assert bench_camera.main(["--data", str(course_data), "--count", "8", "--modes", "flat out",
                              "--out", str(tmp_path)]) == 0
    # THEN both stages answered every frame, with latencies and the two-stage breakdown
    data = json.loads((tmp_path / "camera.json").read_text())
    for stage in ("one stage", "two stages"):
        run = data[f"{stage} / flat out"]
        assert run["completed"] == run["requests"] == 8 and run["duplicates"] == 0
        assert 0 < run["p50_s"] <= run["p95_s"] <= run["max_s"]
    parts = data["two stages / flat out"]["breakdown_ms"]
    assert set(parts) == set(bench_camera.PARTS) and parts["detect"] > 0
    # AND the report has its section
    report.main(["--out", str(tmp_path), "--no-plots"])
    assert "## The camera path" in (tmp_path / "REPORT.md").read_text()


def test_camera_streams_name_every_course_clip_and_nobody_wrongly(tmp_path: Path,
                                                                   course_data: Path) -> None:
    from bench import camera_streams

    # GIVEN the 8 course clips as the Pi sent them, each judged frame by frame alone and as one
    # camera's stream (the real CameraTracks on a moto server's provisioned table)
    out = tmp_path / "streams.json"
    # WHEN the measurement runs on them
    assert camera_streams.main(["--data", str(course_data), "--sets", "course",
                                "--out", str(out)]) == 0
    # THEN every clip's person is named, alone as in a stream (floki at once: he needs no frame
    # before since the decision rule scales with the gallery), and no face is named wrongly
    course = json.loads(out.read_text())["sets"]["course"]
    alone, camera = course["alone"], course["camera"]
    assert (alone["streams"], alone["streams_named"], camera["streams_named"]) == (8, 8, 8)
    assert alone["true_named"] == camera["true_named"] == alone["frames"] == 36
    # the one borderline face is test_5's boy on the first frame, and he stays unknown_person
    assert "decision:confirmed" not in alone and "decision:confirmed" not in camera
    assert alone.get("wrong_named", 0) == camera.get("wrong_named", 0) == 0
