"""The daemon's settings: one frozen dataclass, built once from file → environment → arguments.

TOML file with flat keys (see docs/contracts.md); each key can be overridden by the environment
variable ``OPENSTACK_HANDLER_<KEY upper>`` (coerced to the field's type; an empty value unsets an
optional key); keyword overrides win over both. Relative paths in the file are resolved against the
file's directory; relative paths from the environment or overrides against the working directory.
AWS credentials and endpoints are not settings: boto3's normal chain provides them.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from openstack_handler.errors import ConfigError
from openstack_handler.identity import NOVA_METADATA_URL

ENV_PREFIX = "OPENSTACK_HANDLER_"
MIB = 1024 * 1024
#: botocore attempts per SQS call, and the read timeout's margin above the long-poll wait.
SQS_ATTEMPTS = 3
SQS_READ_MARGIN_S = 10


@dataclass(frozen=True, kw_only=True)
class Settings:
    """Everything the daemon needs to run; build it with :func:`load_settings`."""

    input_queue_url: str
    output_queue_url: str
    function_name: str
    results_dir: Path = Path("results")
    #: sqlite state (de-duplication, counters, last error). Default: $STATE_DIRECTORY (systemd's
    #: StateDirectory=), else $XDG_STATE_HOME/openstack-handler, else ~/.local/state/openstack-handler.
    state_dir: Path = field(default_factory=lambda: _default_state_dir(os.environ))
    region: str = "us-east-1"
    #: in-flight invocations at most (the worker pool size; receive batches never exceed free slots).
    concurrency: int = 4
    #: the function's configured timeout; the invoke read timeout is this + 30 s.
    function_timeout_s: int = 60
    #: SQS long-poll wait (0..20).
    wait_time_s: int = 20
    #: on SIGTERM/SIGINT, how long in-flight invocations may take to finish.
    grace_period_s: int = 30
    #: visibility timeout requested on receive; the heartbeat extends it every third of it.
    visibility_timeout_s: int = 90
    #: a video larger than this (from the event's size) gets an ``.error`` result, no invocation.
    max_object_bytes: int = 512 * MIB
    input_dlq_url: str | None = None
    output_dlq_url: str | None = None
    #: invoke retries on throttling/5xx/connection errors (attempts in all, then the message waits
    #: for redelivery), with full-jitter exponential backoff from *initial* up to *max* seconds.
    invoke_max_attempts: int = 6
    invoke_backoff_initial_s: float = 0.5
    invoke_backoff_max_s: float = 20.0
    #: longest wait between two tries of an unreachable SQS or Lambda, or an unwritable results dir.
    outage_backoff_max_s: float = 15.0
    #: a consumer/drainer loop that has not turned for this long counts as hung: the systemd
    #: watchdog pings stop (so systemd restarts the daemon). 0: derived from the SQS timeouts.
    stall_timeout_s: int = 0
    log_level: str = "info"
    #: this process's name among several daemons on one machine that share the queues, the
    #: state DB and the results dir (systemd's ``handler@%i``): it goes into every log line,
    #: its temp-file names and its heartbeat's metadata keys. "" for a lone daemon.
    replica: str = ""
    #: Nova's metadata service, read once at start for the instance identity bound into every
    #: log line; "" turns it off. Off-cloud the read fails fast and the daemon carries on.
    metadata_url: str = NOVA_METADATA_URL
    metadata_timeout_s: float = 1.0
    #: the clouds.yaml entry (openstacksdk's search path: $OS_CLIENT_CONFIG_FILE,
    #: ~/.config/openstack, /etc/openstack) whose credential publishes the heartbeat to this
    #: server's metadata. None: no heartbeat in the cloud.
    cloud_name: str | None = None
    #: the server (id or name) that carries the heartbeat; default: this instance's uuid from
    #: the metadata service.
    cloud_server: str | None = None
    cloud_heartbeat_interval_s: float = 60.0
    #: timeout of each OpenStack API call the heartbeat makes.
    cloud_api_timeout_s: float = 10.0

    def __post_init__(self) -> None:
        _validate(self)

    @property
    def invoke_read_timeout_s(self) -> int:
        return self.function_timeout_s + 30

    @property
    def heartbeat_interval_s(self) -> float:
        return self.visibility_timeout_s / 3

    @property
    def sqs_read_timeout_s(self) -> int:
        """SQS read timeout: the long poll plus a margin (botocore retries it SQS_ATTEMPTS times)."""
        return self.wait_time_s + SQS_READ_MARGIN_S

    @property
    def stall_limit_s(self) -> float:
        """How long one loop turn may legitimately take (every SQS try timing out, then the
        longest backoff), unless ``stall_timeout_s`` says otherwise."""
        if self.stall_timeout_s:
            return float(self.stall_timeout_s)
        return SQS_ATTEMPTS * (self.sqs_read_timeout_s + 5) + self.outage_backoff_max_s + 30

    @property
    def state_db_path(self) -> Path:
        return self.state_dir / "state.sqlite3"

    def as_log_dict(self) -> dict[str, Any]:
        """The settings as plain values, for the startup log line (they hold no secrets)."""
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(self).items()}


_KINDS: dict[str, str] = {f.name: str(f.type) for f in dataclasses.fields(Settings)}
_LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
#: letters, digits and "-": safe in file names and Nova metadata keys, and never "_" or ".",
#: which separate the replica from the rest of those names.
_REPLICA = re.compile(r"[A-Za-z0-9-]{1,32}")


def _default_state_dir(env: Mapping[str, str]) -> Path:
    if env.get("STATE_DIRECTORY"):
        return Path(env["STATE_DIRECTORY"].split(":")[0])
    base = env.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "openstack-handler"


def load_settings(path: str | os.PathLike[str] | None, env: Mapping[str, str] = os.environ,
                  **overrides: Any) -> Settings:
    """Read *path* (TOML, may be None), apply ``OPENSTACK_HANDLER_*`` from *env*, then *overrides*.

    Raises :class:`ConfigError` for an unreadable file, unknown keys, bad types or values.
    """
    values: dict[str, Any] = {}
    if path is not None:
        values.update(_read_file(Path(path)))
    for name in _KINDS:
        raw = env.get(ENV_PREFIX + name.upper())
        if raw is not None:
            values[name] = _coerce_env(name, raw)
    unknown = sorted(set(overrides) - set(_KINDS))
    if unknown:
        raise ConfigError(f"unknown setting(s): {', '.join(unknown)}")
    for name, value in overrides.items():
        values[name] = _check_type(name, value, source="argument")
    if "state_dir" not in values:
        values["state_dir"] = _default_state_dir(env)
    missing = [n for n in ("input_queue_url", "output_queue_url", "function_name")
               if not values.get(n)]
    if missing:
        raise ConfigError(f"missing required setting(s): {', '.join(missing)}"
                          f" (file key or {ENV_PREFIX}<KEY>)")
    try:
        return Settings(**values)
    except TypeError as exc:  # dataclass signature mismatch: a bug in the tables above
        raise ConfigError(str(exc)) from exc


def _read_file(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError as exc:
        raise ConfigError(f"config file not found: {path}") from exc
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc
    unknown = sorted(set(data) - set(_KINDS))
    if unknown:
        raise ConfigError(f"{path}: unknown key(s): {', '.join(unknown)}"
                          f" (known: {', '.join(_KINDS)})")
    base = path.resolve().parent
    values: dict[str, Any] = {}
    for name, value in data.items():
        value = _check_type(name, value, source=str(path))
        if isinstance(value, Path) and not value.is_absolute():
            value = base / value
        values[name] = value
    return values


def _coerce_env(name: str, raw: str) -> Any:
    kind = _KINDS[name]
    var = ENV_PREFIX + name.upper()
    raw = raw.strip()
    if kind == "str | None":
        return raw or None
    if kind == "int":
        try:
            return int(raw, 10)
        except ValueError as exc:
            raise ConfigError(f"{var}={raw!r}: expected an integer") from exc
    if kind == "float":
        try:
            return float(raw)
        except ValueError as exc:
            raise ConfigError(f"{var}={raw!r}: expected a number") from exc
    if kind == "Path":
        if not raw:
            raise ConfigError(f"{var} is empty: expected a path")
        return Path(raw)
    return raw


def _check_type(name: str, value: Any, *, source: str) -> Any:
    kind = _KINDS[name]
    bad = ConfigError(f"{source}: {name} = {value!r}: expected {kind}")
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad
    elif kind == "float":
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise bad
        value = float(value)
    elif kind == "Path":
        if not isinstance(value, str | os.PathLike) or not str(value):
            raise bad
        value = Path(value)
    elif kind == "str | None":
        if value is not None and not isinstance(value, str):
            raise bad
        value = value or None
    elif not isinstance(value, str):
        raise bad
    return value


def _validate(s: Settings) -> None:
    def need(ok: bool, message: str) -> None:
        if not ok:
            raise ConfigError(message)

    for name in ("input_queue_url", "output_queue_url", "function_name", "region"):
        need(bool(getattr(s, name)), f"{name} must not be empty")
    need(1 <= s.concurrency <= 1000, f"concurrency must be 1..1000, not {s.concurrency}")
    need(1 <= s.function_timeout_s <= 900,
         f"function_timeout_s must be 1..900 (Lambda's limit), not {s.function_timeout_s}")
    need(0 <= s.wait_time_s <= 20, f"wait_time_s must be 0..20 (SQS long poll), not {s.wait_time_s}")
    need(0 <= s.grace_period_s <= 3600, f"grace_period_s must be 0..3600, not {s.grace_period_s}")
    need(s.grace_period_s < s.visibility_timeout_s,
         f"grace_period_s ({s.grace_period_s}) must be shorter than visibility_timeout_s "
         f"({s.visibility_timeout_s}): in-flight messages must not reappear while we finish them")
    need(0.5 <= s.outage_backoff_max_s <= 600,
         f"outage_backoff_max_s must be 0.5..600, not {s.outage_backoff_max_s}")
    need(0 <= s.stall_timeout_s <= 86400, f"stall_timeout_s must be 0..86400, not {s.stall_timeout_s}")
    need(2 <= s.visibility_timeout_s <= 43200,
         f"visibility_timeout_s must be 2..43200, not {s.visibility_timeout_s}")
    need(s.max_object_bytes >= 1, f"max_object_bytes must be positive, not {s.max_object_bytes}")
    need(1 <= s.invoke_max_attempts <= 100,
         f"invoke_max_attempts must be 1..100, not {s.invoke_max_attempts}")
    need(0 < s.invoke_backoff_initial_s <= s.invoke_backoff_max_s,
         "invoke_backoff_initial_s must be > 0 and <= invoke_backoff_max_s")
    need(s.log_level.lower() in _LOG_LEVELS,
         f"log_level must be one of {', '.join(_LOG_LEVELS)}, not {s.log_level!r}")
    need(s.replica == "" or _REPLICA.fullmatch(s.replica) is not None,
         f"replica must be 1..32 letters, digits or '-', not {s.replica!r}")
    need(s.input_queue_url != s.output_queue_url, "input_queue_url and output_queue_url are the same")
    need(s.metadata_url == "" or s.metadata_url.startswith(("http://", "https://")),
         f"metadata_url must be an http(s) URL or empty (off), not {s.metadata_url!r}")
    need(0.05 <= s.metadata_timeout_s <= 30,
         f"metadata_timeout_s must be 0.05..30, not {s.metadata_timeout_s}")
    need(0.1 <= s.cloud_heartbeat_interval_s <= 86400,
         f"cloud_heartbeat_interval_s must be 0.1..86400, not {s.cloud_heartbeat_interval_s}")
    need(1 <= s.cloud_api_timeout_s <= 300,
         f"cloud_api_timeout_s must be 1..300, not {s.cloud_api_timeout_s}")


def settings_toml(values: Mapping[str, Any], *, header: str = "") -> str:
    """Render settings as the flat `key = value` TOML that :func:`load_settings` reads."""
    lines = [f"# {header}"] if header else []
    for key, value in values.items():
        if isinstance(value, bool):
            rendered = "true" if value else "false"
        elif isinstance(value, int | float):
            rendered = repr(value)
        else:  # JSON string escapes are TOML basic-string escapes, except DEL must be escaped
            rendered = json.dumps(str(value), ensure_ascii=False).replace("\x7f", "\\u007f")
        lines.append(f"{key} = {rendered}")
    return "\n".join(lines) + "\n"
