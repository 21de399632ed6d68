"""The endpoint's spec file: the format `python -m lambda_service.endpoint --spec` reads."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from lambda_service.endpoint import EXIT_BAD_SPEC
from lambda_service.spec import EndpointSpec, FunctionSpec, SpecError, split_handler


def test_spec_round_trips_through_its_json_file(tmp_path: Path) -> None:
    spec = EndpointSpec(functions=(FunctionSpec(
        name="face-recognition", handler="lambda_image.handlers:s3_handler", timeout_s=60,
        memory_mb=2048, concurrency=2, environment={"GALLERY_PATH": "/g", "N": 1}),))  # type: ignore[dict-item]
    loaded = EndpointSpec.load(spec.write(tmp_path / "spec.json"))
    assert loaded == spec
    assert loaded.functions[0].environment == {"GALLERY_PATH": "/g", "N": "1"}
    assert json.loads((tmp_path / "spec.json").read_text())["functions"][0]["concurrency"] == 2


@pytest.mark.parametrize(("handler", "expected"), [
    ("lambda_image.handlers:s3_handler", ("lambda_image.handlers", "s3_handler")),
    ("lambda_image.handlers.s3_handler", ("lambda_image.handlers", "s3_handler")),
])
def test_handler_names_in_both_notations(handler: str, expected: tuple[str, str]) -> None:
    assert split_handler(handler) == expected


@pytest.mark.parametrize("data", [
    {"functions": [{"name": "f", "handler": "nomodule"}]},
    {"functions": [{"name": "bad name", "handler": "m:f"}]},
    {"functions": [{"name": "f", "handler": "m:f", "concurrency": 0}]},
    {"functions": [{"name": "f", "handler": "m:f", "unknown": 1}]},
    {"functions": [{"name": "f", "handler": "m:f"}, {"name": "f", "handler": "m:g"}]},
    {},
])
def test_bad_specs_are_rejected(data: dict) -> None:
    with pytest.raises(SpecError):
        EndpointSpec.from_json(data)


def test_cli_exits_with_bad_spec_code(tmp_path: Path) -> None:
    path = tmp_path / "spec.json"
    path.write_text('{"functions": [{"name": "f"}]}')
    done = subprocess.run([sys.executable, "-m", "lambda_service.endpoint", "--spec", str(path)],
                          capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == EXIT_BAD_SPEC
    assert "bad_spec" in done.stderr
