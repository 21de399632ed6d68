"""Expected results, in the course's format: a CSV with columns `Image,Results` (the image's
name without its extension, and the name its answer must carry)."""

from __future__ import annotations

import csv
from collections.abc import Mapping
from pathlib import Path

from camera.frames import Frame


class ExpectedError(ValueError):
    """The expected-results file cannot be read."""


def read_expected(path: Path) -> dict[str, str]:
    """`Image` (stem, or file name) → `Results`."""
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            if not reader.fieldnames or not {"Image", "Results"} <= set(reader.fieldnames):
                raise ExpectedError(f"{path}: expected the columns Image,Results")
            return {row["Image"].strip(): row["Results"].strip() for row in reader
                    if row.get("Image")}
    except OSError as exc:
        raise ExpectedError(f"{path}: {exc}") from exc


def expected_for(frame: Frame, expected: Mapping[str, str]) -> str | None:
    """The frame's expected result: by its own name (with or without extension), else by its
    source (a video's frames all expect the video's person)."""
    stem = frame.filename.rsplit(".", 1)[0]
    for key in (frame.filename, stem, frame.source, frame.source.rsplit(".", 1)[0]):
        if key in expected:
            return expected[key]
    return None
