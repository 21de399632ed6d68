"""`python -m lambda_image`: recognise local videos and build galleries without any cloud."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from lambda_image.cli import main


def test_recognize_prints_one_json_line_per_video(course_data: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"")

    code = main(["recognize", "--gallery", str(course_data / "encoding"),
                 str(course_data / "videos" / "test_6.mp4"), str(bad)])

    good, broken = (json.loads(line) for line in capsys.readouterr().out.splitlines())
    assert code == 1, "a failed video makes the exit status non-zero"
    assert good["names"] == ["floki"] and good["error"] is None and good["faces"]
    assert broken["names"] == [] and "InvalidVideo" in broken["error"]


def test_enroll_dlib_gallery_then_inspect_and_recognize(photos: dict, clips: dict, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    images = tmp_path / "people"
    for person, photo in {"obama": "obama2", "biden": "biden", "hopper": "grace_hopper"}.items():
        (images / person).mkdir(parents=True)
        shutil.copy(photos[photo], images / person / Path(photos[photo]).name)
    out = tmp_path / "encoding"

    assert main(["gallery", "enroll", "--embedder", "dlib", "--images", str(images),
                 "--out", str(out)]) == 0
    assert main(["gallery", "inspect", str(out)]) == 0
    assert main(["recognize", "--gallery", str(out), str(clips["two_presidents"]),
                 str(clips["grace_hopper"])]) == 0

    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert lines[1]["embedder"] == "dlib" and lines[1]["people"] == {"biden": 1, "hopper": 1,
                                                                     "obama": 1}
    assert set(lines[2]["names"]) == {"obama", "biden"}
    assert lines[3]["names"] == ["hopper"]


def test_enroll_facenet_writes_data_pt_format(photos: dict, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    import torch
    from facenet_pytorch import InceptionResnetV1

    weights = tmp_path / "random-weights.pt"  # random init: format test only, not accuracy
    torch.save(InceptionResnetV1(pretrained=None).state_dict(), weights)
    (tmp_path / "people" / "obama").mkdir(parents=True)
    shutil.copy(photos["obama"], tmp_path / "people" / "obama" / "a.jpg")

    assert main(["gallery", "enroll", "--embedder", "facenet", "--images",
                 str(tmp_path / "people"), "--out", str(tmp_path / "data.pt"),
                 "--facenet-weights", str(weights)]) == 0

    embeddings, names = torch.load(tmp_path / "data.pt", weights_only=True)
    assert names == ["obama"] and embeddings[0].shape == (1, 512)
    assert json.loads(capsys.readouterr().out)["embedder"] == "facenet"


def test_every_command_and_option_explains_itself() -> None:
    from cli_helpers import commands, undocumented

    from lambda_image.cli import build_parser

    problems = [p for path, parser in commands(build_parser(), "python -m lambda_image")
                for p in undocumented(path, parser)]
    assert problems == []


def test_inspecting_a_file_that_is_not_a_gallery_says_what_a_gallery_is(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import pickle

    text, other = tmp_path / "notes.txt", tmp_path / "other.pkl"
    text.write_text("# not a gallery at all\n" * 20)
    other.write_bytes(pickle.dumps({"names": ["a"]}))
    for path, what in ((text, "neither a pickle nor a torch file"),
                       (other, "a dict with keys ['names'], not 'name' and 'encoding'")):
        assert main(["gallery", "inspect", str(path)]) == 2
        err = capsys.readouterr().err
        assert f"{path} is not a gallery ({what}): a gallery is either the course's `encoding` " \
               "pickle" in err and "gallery enroll" in err
        assert "Memo value" not in err and "index" not in err


def test_errors_follow_two_documented_conventions(course_data: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    # a usage error (here: the gallery the command cannot start without) is one stderr line in
    # argparse's own form, nothing on stdout, exit 2 ...
    assert main(["recognize", "--gallery", str(tmp_path / "missing.pkl"), "v.mp4"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    [line] = captured.err.splitlines()
    assert line.startswith("python -m lambda_image recognize: error: cannot read gallery ")
    with pytest.raises(SystemExit) as info:  # ... exactly as argparse's own usage errors
        main(["recognize", "v.mp4"])
    assert info.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1].startswith(
        "python -m lambda_image recognize: error: ")
    # a per-item error (a missing video) is that item's JSON line on stdout, exit 1
    assert main(["recognize", "--gallery", str(course_data / "encoding"),
                 str(tmp_path / "missing.mp4")]) == 1
    captured = capsys.readouterr()
    assert json.loads(captured.out)["error"].startswith("FileNotFoundError: ")
    assert captured.err == ""
    # and the exit codes are documented in the help
    with pytest.raises(SystemExit):
        main(["recognize", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "exit status: 0 every video recognised; 1 some video failed" in help_text
    assert "2 usage error" in help_text
