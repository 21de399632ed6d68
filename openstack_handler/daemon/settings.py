"""The daemon's settings: one frozen dataclass, built once from file → environment → arguments.

TOML file with flat keys (see docs/contracts.md); each key can be overridden by the environment
variable ``OPENSTACK_HANDLER_<KEY upper>`` (coerced to the field's type; an empty value unsets an
optional key); keyword overrides win over both. Relative paths in the file are resolved against the
file's directory; relative paths from the environment or overrides against the working directory.

AWS credentials are not settings: boto3's normal chain provides them. The AWS endpoints are:
``endpoint_url`` (every service the daemon calls), with ``sqs_endpoint_url`` and
``lambda_endpoint_url`` for one service each; every client the daemon builds is created with them
(openstack_handler.daemon.aws_clients). Unset, boto3's own configuration decides (``AWS_ENDPOINT_URL*``,
the profile's ``endpoint_url``), else AWS itself. The settings remember where each value came
from (:attr:`Settings.provenance`), so that an error can say which file or variable to fix.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from openstack_handler.daemon.errors import ConfigError
from openstack_handler.daemon.report import AWS_PRICE_PER_GB_S, AWS_PRICE_PER_REQUEST
from openstack_handler.private_cloud.identity import NOVA_METADATA_URL

ENV_PREFIX = "OPENSTACK_HANDLER_"
MIB = 1024 * 1024
#: botocore attempts per SQS call, and the read timeout's margin above the long-poll wait.
SQS_ATTEMPTS = 3
SQS_READ_MARGIN_S = 10
#: the longest a received message stays hidden before the visibility heartbeat has extended it
#: (see InputConsumer): a message returned by a receive that nobody waits for any more — the
#: daemon stopped while it long-polled — reappears after this, not after visibility_timeout_s.
RECEIVE_CLAIM_S = 15
#: boto3's own endpoint variables, recorded at load time so that errors can name them.
AWS_ENDPOINT_VARIABLES = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_SQS", "AWS_ENDPOINT_URL_LAMBDA")
REQUIRED = ("input_queue_url", "output_queue_url", "function_name")
#: the one target of a settings file that names none: today's single Lambda.
DEFAULT_TARGET = "lambda"


@dataclass(frozen=True, kw_only=True)
class TargetSettings:
    """One place the function runs (a ``[[targets]]`` table): where, which function, how many
    invocations in flight at most, and the price its GB-seconds are counted at."""

    name: str
    slots: int = 4
    #: None: the settings' ``function_name``.
    function_name: str | None = None
    #: the Lambda API endpoint (our private function service, say); None: the settings'
    #: Lambda endpoint (``lambda_endpoint_url``, ``endpoint_url``, boto3's, else AWS).
    endpoint_url: str | None = None
    #: None: the settings' ``price_per_gb_s`` / ``price_per_request`` (AWS's by default).
    price_per_gb_s: float | None = None
    price_per_request: float | None = None
    #: the AWS profile (shared credentials file) whose key signs this target's calls — the
    #: private function service's own key pair; None: boto3's default chain, as for SQS.
    profile: str | None = None
    #: the private pool's Heat stack: the target's places are that pool's servers (ACTIVE,
    #: heartbeating, not draining; read through ``cloud_name`` every ``pool_refresh_s``), each
    #: with ``slots``; endpoint_url is then unused. None: one fixed place.
    pool: str | None = None
    #: a pool target's servers at most (its invocation threads are sized for them)
    max_servers: int = 19

    @property
    def max_slots(self) -> int:
        """Invocations in flight at most on this target."""
        return self.slots * self.max_servers if self.pool else self.slots



@dataclass(frozen=True)
class Provenance:
    """Where a :class:`Settings` came from, for error messages that say what to fix."""

    #: the settings file, if there was one.
    file: str | None = None
    #: setting name → its source: the file's path, an environment variable, "an argument".
    origins: Mapping[str, str] = field(default_factory=dict)
    #: boto3's own endpoint variables (AWS_ENDPOINT_URL...) as load_settings saw them.
    aws_endpoint_env: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "origins", MappingProxyType(dict(self.origins)))
        object.__setattr__(self, "aws_endpoint_env", MappingProxyType(dict(self.aws_endpoint_env)))


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
    #: how long a message being processed stays hidden from other consumers: a receive claims
    #: it for receive_visibility_s, and the heartbeat extends it to this every third of that.
    visibility_timeout_s: int = 90
    #: a video larger than this (from the event's size) gets an ``.error`` result, no invocation.
    max_object_bytes: int = 512 * MIB
    input_dlq_url: str | None = None
    output_dlq_url: str | None = None
    #: the camera path's request queue and its DLQ (not the daemon's: for `redrive --queue
    #: request`, which moves its dead letters back once their cause is fixed).
    request_queue_url: str | None = None
    request_dlq_url: str | None = None
    #: serverless mode's failure queue (the function's OnFailure destination: Lambda's records
    #: of the events it gave up on), for `status` and `redrive --queue failed`.
    failure_queue_url: str | None = None
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
    #: the AWS endpoint of every service the daemon calls (SQS, Lambda), e.g. the local cloud's
    #: moto server; None: boto3's own configuration, else AWS itself (for ``region``).
    endpoint_url: str | None = None
    #: SQS's endpoint, when it differs from endpoint_url.
    sqs_endpoint_url: str | None = None
    #: Lambda's endpoint, when it differs from endpoint_url (the local cloud serves Lambda apart).
    lambda_endpoint_url: str | None = None
    #: where the function runs, in order of preference (``[[targets]]`` tables; see
    #: openstack_handler.daemon.placement). Empty: one target, the function on the Lambda
    #: endpoint above with ``concurrency`` slots.
    targets: tuple[TargetSettings, ...] = ()
    #: a later target takes a message only when the earlier ones are full and the message has
    #: waited this long (0: at once); None: never (a down target's work still moves on).
    burst_after_s: float | None = None
    #: how often a pool target's servers are read from the cloud, and how old a server's
    #: heartbeat may be for it to take work.
    pool_refresh_s: float = 5.0
    pool_stale_after_s: float = 30.0
    #: what a GB-second and a request cost, for status (AWS Lambda's x86 price by default).
    price_per_gb_s: float = AWS_PRICE_PER_GB_S
    price_per_request: float = AWS_PRICE_PER_REQUEST

    #: where the values came from (not a setting: load_settings fills it in, for messages).
    provenance: Provenance = field(default_factory=Provenance, compare=False, repr=False)

    def __post_init__(self) -> None:
        _validate(self)

    def origin(self, name: str) -> str:
        """Where setting *name* came from: "/etc/h.toml", "OPENSTACK_HANDLER_X", "the default"."""
        return self.provenance.origins.get(name) or "the default"

    @property
    def placement_targets(self) -> tuple[TargetSettings, ...]:
        """The targets with every default filled in (one, :data:`DEFAULT_TARGET`, when the
        settings name none)."""
        targets = self.targets or (TargetSettings(name=DEFAULT_TARGET, slots=self.concurrency),)
        return tuple(dataclasses.replace(
            t, function_name=t.function_name or self.function_name,
            price_per_gb_s=self.price_per_gb_s if t.price_per_gb_s is None else t.price_per_gb_s,
            price_per_request=(self.price_per_request if t.price_per_request is None
                               else t.price_per_request))
            for t in targets)

    @property
    def total_slots(self) -> int:
        """Invocations in flight at most, over every target."""
        return sum(t.max_slots for t in self.placement_targets)

    @property
    def invoke_read_timeout_s(self) -> int:
        return self.function_timeout_s + 30

    @property
    def receive_visibility_s(self) -> int:
        """The visibility a receive asks for (see RECEIVE_CLAIM_S); the heartbeat extends the
        messages it dispatches to visibility_timeout_s."""
        return min(self.visibility_timeout_s, RECEIVE_CLAIM_S)

    @property
    def heartbeat_interval_s(self) -> float:
        return self.receive_visibility_s / 3

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
        return {name: (str(v) if isinstance(v, Path) else
                       [dataclasses.asdict(t) for t in v] if name == "targets" else v)
                for name in _KINDS for v in (getattr(self, name),)}


#: the settings (every field but the bookkeeping ones) and their types.
_KINDS: dict[str, str] = {f.name: str(f.type) for f in dataclasses.fields(Settings)
                          if f.name != "provenance"}
#: what each type is called in an error message.
_KIND_WORDS = {"int": "an integer", "float": "a number", "Path": "a path (a non-empty string)",
               "str": "a string", "str | None": "a string", "float | None": "a number",
               "tuple[TargetSettings, ...]": "a list of [[targets]] tables (name, slots, "
                                             "function_name, endpoint_url, price_per_gb_s, "
                                             "price_per_request)"}
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

    Raises :class:`ConfigError` for an unreadable file, unknown keys, bad types or values; the
    message names the file or variable the bad value came from.
    """
    values: dict[str, Any] = {}
    origins: dict[str, str] = {}
    if path is not None:
        values.update(_read_file(Path(path)))
        origins.update(dict.fromkeys(values, str(path)))
    for name in _KINDS:
        var = ENV_PREFIX + name.upper()
        raw = env.get(var)
        if raw is not None:
            values[name] = _coerce_env(name, raw)
            origins[name] = var
    unknown = sorted(set(overrides) - set(_KINDS))
    if unknown:
        raise ConfigError(f"unknown setting(s): {', '.join(unknown)}")
    for name, value in overrides.items():
        values[name] = _check_type(name, value, source="an argument")
        origins[name] = "an argument"
    if "state_dir" not in values:
        values["state_dir"] = _default_state_dir(env)
    missing = [n for n in REQUIRED if not values.get(n)]
    if missing:
        where = f"not in {path}" if path is not None else "no settings file given"
        variables = ", ".join(ENV_PREFIX + n.upper() for n in missing)
        raise ConfigError(f"missing required setting(s): {', '.join(missing)} ({where}, and "
                          f"not set by {variables})")
    aws_env = {k: env[k] for k in AWS_ENDPOINT_VARIABLES if env.get(k)}
    try:
        return Settings(**values, provenance=Provenance(
            file=None if path is None else str(path), origins=origins, aws_endpoint_env=aws_env))
    except TypeError as exc:  # dataclass signature mismatch: a bug in the tables above
        raise ConfigError(str(exc)) from exc


def _read_file(path: Path) -> dict[str, Any]:
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError as exc:
        raise ConfigError(f"config file not found: {path}") from exc
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {path} is not UTF-8 text: {exc}") from exc
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: "
                          f"{explain_toml_error(text, exc)}") from exc
    unknown = sorted(set(data) - set(_KINDS))
    if unknown:
        raise ConfigError(f"{path}: " + "; ".join(_unknown_key(key) for key in unknown))
    base = path.resolve().parent
    values: dict[str, Any] = {}
    for name, value in data.items():
        value = _check_type(name, value, source=str(path))
        if isinstance(value, Path) and not value.is_absolute():
            value = base / value
        values[name] = value
    return values


def _unknown_key(key: str) -> str:
    """"unknown key 'concurency' (did you mean 'concurrency'?)", or the list of known keys."""
    close = difflib.get_close_matches(key, list(_KINDS), n=1, cutoff=0.75)
    if close:
        return f"unknown key {key!r} (did you mean {close[0]!r}?)"
    return f"unknown key {key!r} (known keys: {', '.join(_KINDS)}; see docs/contracts.md)"


_TOML_LINE = re.compile(r"\(at line (\d+), column \d+\)")


def explain_toml_error(text: str, exc: tomllib.TOMLDecodeError) -> str:
    """tomllib's message, said plainly for the mistakes people make in a flat settings file:
    a quoted value that does not end on its line, a string without quotes."""
    message = str(exc)
    match = _TOML_LINE.search(message)
    lines = text.splitlines()
    if match:
        lineno = int(match.group(1))
    else:  # "at end of document": the last line with content
        lineno = max((i + 1 for i, line in enumerate(lines) if line.strip()), default=1)
    line = lines[lineno - 1].strip() if 0 < lineno <= len(lines) else ""
    quotes = line.count('"') - line.count('\\"')
    if (message.startswith(("Unterminated string", "Expected \"'\"")) or
            (message.startswith("Illegal character '\\n'") and quotes % 2 == 1)):
        return (f"line {lineno}: unterminated string: {line!r} opens a quote that does not "
                f"close on the same line ({message})")
    if message.startswith("Invalid value") and "=" in line:
        return (f"line {lineno}: invalid value in {line!r}: strings need quotes, e.g. "
                f"key = \"value\" ({message})")
    return f"line {lineno}: {line!r}: {message}" if line else message


def _coerce_env(name: str, raw: str) -> Any:
    """An environment variable's text as the setting's type; errors read as the file's do."""
    kind = _KINDS[name]
    source = ENV_PREFIX + name.upper()
    raw = raw.strip()
    if kind == "str | None":
        return raw or None
    if kind == "float | None" and not raw:
        return None
    if kind == "tuple[TargetSettings, ...]":
        try:
            targets = json.loads(raw) if raw else []
        except ValueError as exc:
            raise ConfigError(f"{source} must be a JSON list of targets: {exc}") from exc
        return _targets(targets, source=source)
    if kind == "int":
        try:
            return int(raw, 10)
        except ValueError as exc:
            raise _type_error(name, raw, source) from exc
    if kind in ("float", "float | None"):
        try:
            return float(raw)
        except ValueError as exc:
            raise _type_error(name, raw, source) from exc
    if kind == "Path":
        if not raw:
            raise _type_error(name, raw, source)
        return Path(raw)
    return raw


def _type_error(name: str, value: Any, source: str) -> ConfigError:
    """One wording for a value of the wrong type, whether it came from the file, the
    environment or an argument."""
    where = f"from {source}" if source.startswith(ENV_PREFIX) or source == "an argument" \
        else f"in {source}"
    return ConfigError(f"{name} = {toml_value(value)} ({where}): "
                       f"expected {_KIND_WORDS[_KINDS[name]]}")


def _check_type(name: str, value: Any, *, source: str) -> Any:
    kind = _KINDS[name]
    bad = _type_error(name, value, source)
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
    elif kind == "float | None":
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise bad
        value = None if value is None else float(value)
    elif kind == "tuple[TargetSettings, ...]":
        value = _targets(value, source=source)
    elif not isinstance(value, str):
        raise bad
    return value


#: the keys a ``[[targets]]`` table may have, with their types.
TARGET_KEYS = {"name": "str", "slots": "int", "function_name": "str | None",
               "endpoint_url": "str | None", "price_per_gb_s": "float | None",
               "price_per_request": "float | None", "profile": "str | None",
               "pool": "str | None", "max_servers": "int"}


def _targets(value: Any, *, source: str) -> tuple[TargetSettings, ...]:
    """``[[targets]]`` tables (or a JSON list of objects) as TargetSettings; errors name the
    table and the key."""
    if isinstance(value, tuple) and all(isinstance(t, TargetSettings) for t in value):
        return value
    where = f"from {source}" if source.startswith(ENV_PREFIX) or source == "an argument" \
        else f"in {source}"
    if not isinstance(value, list | tuple):
        raise ConfigError(f"targets ({where}): expected {_KIND_WORDS['tuple[TargetSettings, ...]']}")
    targets = []
    for index, table in enumerate(value, 1):
        label = f"targets #{index} ({where})"
        if isinstance(table, TargetSettings):
            targets.append(table)
            continue
        if not isinstance(table, dict):
            raise ConfigError(f"{label}: expected a table, not {toml_value(table)}")
        unknown = sorted(set(table) - set(TARGET_KEYS))
        if unknown:
            raise ConfigError(f"{label}: unknown key(s) {', '.join(unknown)} (known: "
                              f"{', '.join(TARGET_KEYS)})")
        if "name" not in table:
            raise ConfigError(f"{label}: every target needs a name")
        fields: dict[str, Any] = {}
        for key, item in table.items():
            kind = TARGET_KEYS[key]
            ok = (isinstance(item, str) if kind == "str" else
                  isinstance(item, int) and not isinstance(item, bool) if kind == "int" else
                  item is None or isinstance(item, str) if kind == "str | None" else
                  item is None or (isinstance(item, int | float) and not isinstance(item, bool)))
            if not ok:
                raise ConfigError(f"{label}: {key} = {toml_value(item)}: expected "
                                  f"{_KIND_WORDS[kind]}")
            fields[key] = float(item) if kind == "float | None" and item is not None else item
        targets.append(TargetSettings(**fields))
    return tuple(targets)


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
    for name in ("endpoint_url", "sqs_endpoint_url", "lambda_endpoint_url"):
        value = getattr(s, name)
        need(value is None or value.startswith(("http://", "https://")),
             f"{name} must be an http(s) URL, not {value!r} (from {s.origin(name)})")
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
    _validate_targets(s, need)


def _validate_targets(s: Settings, need: Any) -> None:
    names = [t.name for t in s.targets]
    need(len(set(names)) == len(names), f"targets: duplicate names in {names}")
    if s.targets:
        need("concurrency" not in s.provenance.origins,
             f"concurrency (from {s.origin('concurrency')}) and targets are both set: with "
             "targets, each one's slots say how many invocations it runs at once")
    for t in s.targets:
        need(_REPLICA.fullmatch(t.name) is not None,
             f"targets: name must be 1..32 letters, digits or '-', not {t.name!r}")
        need(1 <= t.slots <= 1000, f"targets: {t.name}: slots must be 1..1000, not {t.slots}")
        need(1 <= t.max_servers <= 100,
             f"targets: {t.name}: max_servers must be 1..100, not {t.max_servers}")
        need(t.pool is None or s.cloud_name is not None,
             f"targets: {t.name}: a pool target needs cloud_name (the clouds.yaml entry that "
             "reads the pool's servers)")
        need(t.pool is None or t.endpoint_url is None,
             f"targets: {t.name}: a pool target's endpoints come from its servers; drop "
             "endpoint_url")
        need(t.endpoint_url is None or t.endpoint_url.startswith(("http://", "https://")),
             f"targets: {t.name}: endpoint_url must be an http(s) URL, not {t.endpoint_url!r}")
        need(t.function_name is None or bool(t.function_name),
             f"targets: {t.name}: function_name must not be empty")
        for price in (t.price_per_gb_s, t.price_per_request):
            need(price is None or price >= 0, f"targets: {t.name}: prices must be >= 0")
    need(s.burst_after_s is None or 0 <= s.burst_after_s <= 3600,
         f"burst_after_s must be 0..3600 or unset (never), not {s.burst_after_s}")
    need(0.5 <= s.pool_refresh_s <= 3600 and s.pool_stale_after_s >= s.pool_refresh_s,
         f"pool_refresh_s must be 0.5..3600 and pool_stale_after_s at least that, not "
         f"{s.pool_refresh_s} and {s.pool_stale_after_s}")
    need(s.price_per_gb_s >= 0 and s.price_per_request >= 0, "prices must be >= 0")


def toml_value(value: Any) -> str:
    """*value* as TOML writes it (also how error messages show a value, wherever it came from)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, TargetSettings):
        value = {k: v for k, v in dataclasses.asdict(value).items() if v is not None}
    if isinstance(value, Mapping):  # an inline table (a target)
        return "{" + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + "}"
    # JSON string escapes are TOML basic-string escapes, except DEL must be escaped
    return json.dumps(str(value), ensure_ascii=False).replace("\x7f", "\\u007f")


def settings_toml(values: Mapping[str, Any], *, header: str = "") -> str:
    """Render settings as the flat `key = value` TOML that :func:`load_settings` reads."""
    lines = [f"# {header}"] if header else []
    lines += [f"{key} = {toml_value(value)}" for key, value in values.items()]
    return "\n".join(lines) + "\n"
