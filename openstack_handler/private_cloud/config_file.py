"""Settings files of the OpenStack side's services (the autoscaler, the pool agent): one TOML
table of a frozen dataclass's fields. Unknown keys, wrong types and missing required keys are
errors that name the key (exit 78 from the CLI: restarting will not help)."""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

_TYPES: dict[str, tuple[type, ...]] = {"str": (str,), "str | None": (str,), "int": (int,),
                                       "float": (int, float), "bool": (bool,)}


class SettingsFileError(ValueError):
    """A settings file is unreadable or invalid."""


def load_settings_file(cls: type[T], path: Path) -> T:
    """An instance of the dataclass *cls* from the TOML file *path*."""
    try:
        document = tomllib.loads(path.read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise SettingsFileError(f"{path}: {exc}") from exc
    known = {f.name: str(f.type) for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(document) - set(known))
    if unknown:
        raise SettingsFileError(f"{path}: unknown key(s) {', '.join(unknown)} (known: "
                                f"{', '.join(known)})")
    values: dict[str, Any] = {}
    for key, value in document.items():
        kind = known[key]
        accepted = _TYPES.get(kind, (object,))
        if not isinstance(value, accepted) or (isinstance(value, bool) and kind != "bool"):
            raise SettingsFileError(f"{path}: {key} = {value!r}: expected {kind}")
        values[key] = float(value) if kind == "float" else value
    missing = [f.name for f in dataclasses.fields(cls)  # type: ignore[arg-type]
               if f.name not in values and f.default is dataclasses.MISSING
               and f.default_factory is dataclasses.MISSING]
    if missing:
        raise SettingsFileError(f"{path}: missing required key(s) {', '.join(missing)}")
    try:
        return cls(**values)
    except ValueError as exc:
        raise SettingsFileError(f"{path}: {exc}") from exc
