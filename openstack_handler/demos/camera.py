"""`openstack-handler local camera-demo`: the camera path on one machine.

Brings up the local cloud with the camera path only (its three functions, two Function URLs and
the request queue's trigger), then runs the real camera client (`python -m camera send`, a
process of its own) on every video of a folder twice: through the one-stage URL (the answer over
HTTP) and through the two-stage URL (the answer on the response queue). Prints one row per frame
with both answers and latencies, and whether each is right against `video,names` expectations.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, Any

from localcloud.cloud import LocalCloud
from localcloud.workdir import WorkDir
from openstack_handler.provisioning.spec import ResourceSpec

STAGES = ("one stage", "two stages")


@dataclass(frozen=True)
class FrameRow:
    """One frame's answers: per stage, (result or error, latency in seconds or None), and who
    is nearest the borderline faces left unnamed there (lambda_image.camera_tracks)."""

    video: str
    filename: str
    answers: dict[str, tuple[str, float | None]]
    expected: tuple[str, ...] | None = None
    borderline: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def correct(self, stage: str) -> bool | None:
        """True: one of the video's people; None: not judged, or `unconfirmed`; else False."""
        if self.expected is None or self.unconfirmed(stage):
            return None
        return self.answers.get(stage, ("", None))[0] in self.expected

    def unconfirmed(self, stage: str) -> bool:
        """`unknown_person` for a borderline face nearest one of the video's people that the
        camera's frames before could not confirm yet: not named, and not named wrongly."""
        return (self.expected is not None
                and self.answers.get(stage, ("", None))[0] == "unknown_person"
                and any(n in self.expected for n in self.borderline.get(stage, ())))


@dataclass(frozen=True)
class CameraDemoReport:
    rows: list[FrameRow]
    client_exits: dict[str, int] = field(default_factory=dict)
    log_dir: Path | None = None

    @property
    def ok(self) -> bool:
        answered = all(len(r.answers) == len(STAGES) for r in self.rows) and bool(self.rows)
        return answered and all(r.correct(s) is not False for r in self.rows for s in STAGES)


def read_expected_names(path: Path) -> dict[str, tuple[str, ...]]:
    """`video,names` (as `local demo` reads it) → the names a frame's `result` may be: the
    answer names the most prominent face, so any of the video's people is right."""
    with path.open(newline="") as handle:
        return {row["video"]: tuple(row["names"].split()) for row in csv.DictReader(handle)}


def run_camera_demo(*, videos: Path, gallery: Path, students: Path,
                    expected: Path | None = None, every: int = 15, concurrency: int = 1,
                    timeout_s: float = 60.0, work_dir: Path | None = None,
                    keep_work_dir: bool = False, out: IO[str] | None = None) -> CameraDemoReport:
    """Run both stages on every video in *videos*; see the module docstring."""
    out = out or sys.stdout
    files = sorted(p for p in videos.iterdir() if p.is_file() and not p.name.startswith("."))
    if not files:
        raise ValueError(f"no videos in {videos}")
    expectations = read_expected_names(expected) if expected else {}
    scratch = WorkDir("camera-demo-", given=work_dir, keep=keep_work_dir)
    print(f"starting the local cloud with the camera path ({concurrency} warm worker(s) per "
          "function)...", file=out, flush=True)
    try:
        with LocalCloud(gallery=gallery, students=students, video=False, camera=True,
                        camera_concurrency=concurrency, work_dir=scratch.path,
                        resources=ResourceSpec(prefix="camdemo", url_auth_type="NONE"),
                        event_source_poll_wait_s=1) as cloud:
            camera = cloud.camera
            env = {**{k: v for k, v in os.environ.items() if not k.startswith("AWS_")},
                   **cloud.client_env()}
            per_stage: dict[str, dict[tuple[str, str], tuple[str, float | None]]] = {}
            borderline: dict[str, dict[tuple[str, str], tuple[str, ...]]] = {}
            exits: dict[str, int] = {}
            for stage, extra in ((STAGES[0], ["--url", camera.frame_url]),
                                 (STAGES[1], ["--url", camera.detect_url, "--response-queue",
                                              camera.response_queue_url])):
                print(f"sending every {every}th frame of {len(files)} videos, {stage}...",
                      file=out, flush=True)
                per_stage[stage], borderline[stage], exits[stage] = _send(
                    files, extra, every, timeout_s, env, scratch.path / f"{stage[:3]}.jsonl")
    except BaseException:
        scratch.finish(False)
        raise
    frames = sorted({key for answers in per_stage.values() for key in answers})
    rows = [FrameRow(video=video, filename=name,
                     answers={s: per_stage[s][(video, name)] for s in STAGES
                              if (video, name) in per_stage[s]},
                     expected=expectations.get(video),
                     borderline={s: borderline[s].get((video, name), ()) for s in STAGES})
            for video, name in frames]
    report = CameraDemoReport(rows=rows, client_exits=exits)
    kept = scratch.finish(report.ok, announce=False)
    report = replace(report, log_dir=scratch.path if kept else None)
    print(render_camera_report(report), file=out, flush=True)
    return report


def _send(files: list[Path], url_arguments: list[str], every: int, timeout_s: float,
          env: dict[str, str], json_out: Path,
          ) -> tuple[dict[tuple[str, str], tuple[str, float | None]],
                     dict[tuple[str, str], tuple[str, ...]], int]:
    """The camera client on each video in turn (a process each, the video one camera's stream);
    its JSON lines, by frame: the answers, and the borderline faces' nearest names."""
    answers: dict[tuple[str, str], tuple[str, float | None]] = {}
    borderline: dict[tuple[str, str], tuple[str, ...]] = {}
    worst = 0
    for video in files:
        json_out.unlink(missing_ok=True)
        done = subprocess.run(
            [sys.executable, "-m", "camera", "send", *url_arguments, "--video", str(video),
             "--every", str(every), "--timeout", str(timeout_s), "--quiet", "--auth", "NONE",
             "--json-out", str(json_out)],
            env=env, capture_output=True, text=True, timeout=timeout_s * 10, check=False)
        worst = max(worst, done.returncode)
        if not json_out.exists():
            raise RuntimeError(f"the camera client failed on {video.name}: {done.stderr[-500:]}")
        for line in json_out.read_text().splitlines():
            record: dict[str, Any] = json.loads(line)
            shown = record["result"] if record["result"] is not None else \
                f"error: {record['error']}"
            answers[(video.name, record["filename"])] = (shown, record["latency_s"])
            borderline[(video.name, record["filename"])] = tuple(
                record.get("borderline_nearest") or ())
    return answers, borderline, worst


def render_camera_report(report: CameraDemoReport) -> str:
    header = ("frame", *(f"{s}: result" for s in STAGES), *(f"{s} s" for s in STAGES), "check")
    table = [header]
    for row in report.rows:
        results = [row.answers.get(s, ("(no answer)", None)) for s in STAGES]
        checks = [row.correct(s) for s in STAGES]
        unconfirmed = [s for s in STAGES if row.unconfirmed(s)]
        if any(c is False for c in checks):
            check = f"WRONG (want {' or '.join(row.expected or ())})"
        elif unconfirmed:
            check = f"unconfirmed ({' and '.join(unconfirmed)})"
        elif all(c is None for c in checks):
            check = ""
        else:
            check = "ok"
        table.append((row.filename, *(r for r, _ in results),
                      *("-" if s is None else f"{s:.3f}" for _, s in results), check))
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
             for r in table]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.append("")
    for stage in STAGES:
        latencies = sorted(r.answers[stage][1] for r in report.rows
                           if stage in r.answers and r.answers[stage][1] is not None)
        right = sum(r.correct(stage) is True for r in report.rows)
        unsure = sum(r.unconfirmed(stage) for r in report.rows)
        judged = sum(r.correct(stage) is not None for r in report.rows) + unsure
        average = f"{sum(latencies) / len(latencies):.3f} s" if latencies else "-"
        lines.append(f"{stage}: {len(latencies)}/{len(report.rows)} frames answered, "
                     f"{right}/{judged} right"
                     + (f" ({unsure} unknown_person: borderline, not yet confirmed by the "
                        "camera's frames before)" if unsure else "")
                     + f", latency avg {average}")
    lines.append("logs kept in " + str(report.log_dir) if report.log_dir is not None
                 else "logs removed (--keep-work-dir keeps them)")
    return "\n".join(lines)
