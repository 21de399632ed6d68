"""The demo set `make demo` runs on: built once, reused while the code that makes it is unchanged,
rebuilt when it changed (a set enrolled by older code is never reused)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from sampledata.demo_set import CLIPS, STUDENTS, build_demo_set, inputs_digest

pytestmark = pytest.mark.timeout(300)


def test_demo_set_is_reused_while_its_code_is_unchanged_and_rebuilt_after(
        photos: dict[str, Path], tmp_path: Path) -> None:
    # GIVEN a demo set built from scratch (photos come from the session's cache)
    demo = build_demo_set(tmp_path / "demo")
    assert sorted(p.name for p in demo.videos.iterdir()) == sorted(c.file_name for c in CLIPS)
    assert json.loads(demo.students.read_text()) == STUDENTS
    with demo.expected.open(newline="") as handle:
        assert len(list(csv.DictReader(handle))) == len(CLIPS)
    assert demo.gallery.stat().st_size > 0
    marker = demo.root / ".complete"
    assert marker.read_text().strip() == inputs_digest()
    first = {p.name: p.stat().st_mtime_ns for p in demo.videos.iterdir()}

    # WHEN it is asked for again with the same code THEN nothing is rebuilt
    build_demo_set(demo.root)
    assert {p.name: p.stat().st_mtime_ns for p in demo.videos.iterdir()} == first

    # WHEN the set was made by other code (its marker holds another digest)
    marker.write_text("made-by-older-code\n")
    build_demo_set(demo.root)
    # THEN it is rebuilt, and marked with today's digest
    rebuilt = {p.name: p.stat().st_mtime_ns for p in demo.videos.iterdir()}
    assert rebuilt.keys() == first.keys()
    assert all(rebuilt[name] != first[name] for name in first)
    assert marker.read_text().strip() == inputs_digest()
