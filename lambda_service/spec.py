"""What the local Lambda endpoint serves: function definitions, read from one JSON spec file.

Spec file format::

    {"region": "us-east-1", "account_id": "123456789012",
     "functions": [{"name": "face-recognition", "handler": "lambda_image.handlers:s3_handler",
                    "timeout_s": 60, "memory_mb": 2048, "concurrency": 2,
                    "environment": {"GALLERY_PATH": "/path/encoding"},
                    "faults": {"error_rate": 0.1, "error_keys": ["poison/"], "seed": 1}},
                   {"name": "frames", "image": "localhost/face-recognition:<tag>",
                    "command": ["lambda_image.handlers.frame_handler"], "memory_mb": 512}]}

A function is either a ``handler`` run in warm worker processes (fast: the rest of the suite) or
an ``image`` run as Lambda runs container images (:mod:`lambda_service.environment`), with
Lambda's ImageConfig overrides ``command``, ``entrypoint`` and ``working_directory``.
``faults`` is optional (see :mod:`lambda_service.faults`; off by default). Optional too:
``"aws_endpoint_url"`` (where the queues of event source mappings are: the local cloud's moto),
``"credentials"`` (access key → secret: what AWS_IAM Function URLs verify signatures against,
and what the event source pollers call SQS with), ``"authenticate"`` (default false: true makes
every API request but ``GET /health`` carry a SigV4 signature by one of the credentials, as
Lambda's API does — the private function service runs so), ``"default_concurrency"`` (the
slots of a function made with CreateFunction without a reserved concurrency; 0, the default:
this host's cores), ``"state_dir"`` (where the functions made with the API are kept, so that
a restarted service serves them again; unset: they live as long as the process),
``"event_source_poll_wait_s"`` (the pollers' long-poll wait) and ``"async_time_scale"`` (in
(0, 1], default 1: multiplies every duration of the asynchronous-invocation contract, Lambda's
retry delays and the maximum event age, so that tests run minutes as fractions of a second; see
:mod:`lambda_service.async_invoke`).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from lambda_service.faults import FaultSpec

DEFAULT_REGION = "us-east-1"
DEFAULT_ACCOUNT_ID = "123456789012"  # moto's account, so ARNs line up with the other services
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class SpecError(ValueError):
    """The endpoint spec is malformed."""


@dataclass(frozen=True)
class FunctionSpec:
    """One function: a `module:function` handler run in `concurrency` warm worker processes, or a
    container image run in as many execution environments."""

    name: str
    handler: str = ""
    timeout_s: float = 60.0
    memory_mb: int = 2048
    concurrency: int = 2
    environment: Mapping[str, str] = field(default_factory=dict)
    faults: FaultSpec | None = None
    image: str = ""
    command: tuple[str, ...] = ()
    entrypoint: tuple[str, ...] = ()
    working_directory: str = ""
    #: a directory put first on the workers' sys.path (a ZipFile made by CreateFunction)
    code_path: str = ""

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise SpecError(f"invalid function name {self.name!r}")
        if bool(self.handler) == bool(self.image):
            raise SpecError(f"{self.name}: give either a handler or an image")
        if self.handler:
            split_handler(self.handler)
        for name in ("command", "entrypoint"):
            value = getattr(self, name)
            if isinstance(value, str) or not all(isinstance(v, str) for v in value):
                raise SpecError(f"{self.name}: {name} must be a list of strings")
            object.__setattr__(self, name, tuple(value))
        if self.timeout_s <= 0 or self.memory_mb < 16 or self.concurrency < 1:
            raise SpecError(f"{self.name}: timeout_s, memory_mb and concurrency must be positive")
        env = {str(k): str(v) for k, v in dict(self.environment).items()}
        object.__setattr__(self, "environment", MappingProxyType(env))
        if self.faults is not None:
            try:
                object.__setattr__(self, "faults", FaultSpec.from_json(self.faults))
            except ValueError as exc:
                raise SpecError(f"{self.name}: {exc}") from exc

    def image_config(self) -> dict[str, Any]:
        """Lambda's ImageConfig of an image function: the overrides it sets, by their API names."""
        return {key: value for key, value in (
            ("Command", list(self.command)), ("EntryPoint", list(self.entrypoint)),
            ("WorkingDirectory", self.working_directory)) if value}

    def to_json(self) -> dict[str, Any]:
        code: dict[str, Any] = {"handler": self.handler,
                                **({"code_path": self.code_path} if self.code_path else {})
                                } if self.handler else {
            "image": self.image, "command": list(self.command),
            "entrypoint": list(self.entrypoint), "working_directory": self.working_directory}
        return {"name": self.name, **code, "timeout_s": self.timeout_s,
                "memory_mb": self.memory_mb, "concurrency": self.concurrency,
                "environment": dict(self.environment),
                **({"faults": self.faults.to_json()} if self.faults is not None else {})}


@dataclass(frozen=True)
class EndpointSpec:
    """Every function the endpoint serves, plus the region/account used to build their ARNs."""

    functions: tuple[FunctionSpec, ...]
    region: str = DEFAULT_REGION
    account_id: str = DEFAULT_ACCOUNT_ID
    aws_endpoint_url: str | None = None
    credentials: Mapping[str, str] = field(default_factory=dict)
    event_source_poll_wait_s: int = 5
    async_time_scale: float = 1.0
    authenticate: bool = False
    #: slots of a function made with CreateFunction and no reserved concurrency (0: the cores)
    default_concurrency: int = 0
    #: where the functions made with the API are kept across restarts ("": in memory only)
    state_dir: str = ""

    def __post_init__(self) -> None:
        names = [f.name for f in self.functions]
        if len(set(names)) != len(names):
            raise SpecError(f"duplicate function names in {names}")
        if not 0 <= self.event_source_poll_wait_s <= 20:
            raise SpecError("event_source_poll_wait_s must be 0..20 (SQS's long-poll range)")
        if (isinstance(self.async_time_scale, bool)
                or not isinstance(self.async_time_scale, int | float)
                or not 0 < self.async_time_scale <= 1):
            raise SpecError(f"async_time_scale must be a number in (0, 1], not "
                            f"{self.async_time_scale!r}")
        object.__setattr__(self, "credentials", MappingProxyType(
            {str(k): str(v) for k, v in dict(self.credentials).items()}))
        if not isinstance(self.authenticate, bool):
            raise SpecError(f"authenticate must be true or false, not {self.authenticate!r}")
        if isinstance(self.default_concurrency, bool) or \
                not isinstance(self.default_concurrency, int) or self.default_concurrency < 0:
            raise SpecError(f"default_concurrency must be an integer >= 0, not "
                            f"{self.default_concurrency!r}")
        if self.authenticate and not self.credentials:
            raise SpecError("authenticate needs credentials to verify signatures against")

    def function_arn(self, name: str) -> str:
        return f"arn:aws:lambda:{self.region}:{self.account_id}:function:{name}"

    def to_json(self) -> dict[str, Any]:
        return {"region": self.region, "account_id": self.account_id,
                "functions": [f.to_json() for f in self.functions],
                "aws_endpoint_url": self.aws_endpoint_url, "credentials": dict(self.credentials),
                "event_source_poll_wait_s": self.event_source_poll_wait_s,
                "async_time_scale": self.async_time_scale, "authenticate": self.authenticate,
                "default_concurrency": self.default_concurrency,
                **({"state_dir": self.state_dir} if self.state_dir else {})}

    def write(self, path: Path) -> Path:
        """Write the spec (owner-only: it carries the local cloud's credentials)."""
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(json.dumps(self.to_json(), indent=2) + "\n")
        return path

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> EndpointSpec:
        try:
            functions = tuple(FunctionSpec(**f) for f in data["functions"])
        except (KeyError, TypeError) as exc:
            raise SpecError(f"bad endpoint spec: {exc}") from exc
        return cls(functions=functions, region=data.get("region", DEFAULT_REGION),
                   account_id=str(data.get("account_id", DEFAULT_ACCOUNT_ID)),
                   aws_endpoint_url=data.get("aws_endpoint_url"),
                   credentials=data.get("credentials") or {},
                   event_source_poll_wait_s=int(data.get("event_source_poll_wait_s", 5)),
                   async_time_scale=data.get("async_time_scale", 1.0),
                   authenticate=data.get("authenticate", False),
                   default_concurrency=data.get("default_concurrency", 0),
                   state_dir=str(data.get("state_dir") or ""))

    @classmethod
    def load(cls, path: Path) -> EndpointSpec:
        return cls.from_json(json.loads(path.read_text(encoding="utf-8")))


def split_handler(handler: str) -> tuple[str, str]:
    """`pkg.mod:func` (or Lambda's own `pkg.mod.func`) → (`pkg.mod`, `func`)."""
    module, sep, func = handler.partition(":")
    if not sep:
        module, _, func = handler.rpartition(".")
    if not module or not func.isidentifier():
        raise SpecError(f"handler must look like 'package.module:function', got {handler!r}")
    return module, func
