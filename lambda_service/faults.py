"""Fault injection for the local Lambda endpoint: off unless a spec asks for it.

A :class:`FaultSpec` says what fraction of synchronous invocations fail and how, and which S3 keys
always fail (deterministic poison)::

    {"error_rate": 0.2, "timeout_rate": 0.05, "throttle_rate": 0.1,
     "error_keys": ["poison/"], "hang_keys": ["slow/"], "seed": 7}

- *throttle*: the API answers 429 ``TooManyRequestsException`` (the function does not run);
- *error*: a function error (``X-Amz-Function-Error: Unhandled``, errorType ``InjectedFault``)
  without running the handler;
- *timeout* / *hang*: the invocation holds one of the function's concurrency slots for the
  function's whole timeout and then fails with ``Sandbox.Timedout``, as a handler that hangs
  does (the warm worker is not killed: a cold start of the real function costs seconds).

``error_keys`` / ``hang_keys`` match as substrings of the decoded S3 keys in the payload's
``Records``; keyed faults win over the random ones. Random draws come from one ``random.Random``
seeded with ``seed`` (None: unseeded). Only RequestResponse invocations are affected.

Where a spec comes from: a function's ``"faults"`` in the endpoint spec JSON, overridden for every
function by the ``LOCALCLOUD_FAULTS`` environment variable (the same JSON), and replaced at run
time by ``POST /_faults`` (see :mod:`lambda_service.api`) so a test can "fix the cause".
"""

from __future__ import annotations

import enum
import json
import random
import threading
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_plus

FAULTS_ENV = "LOCALCLOUD_FAULTS"
_RATES = ("error_rate", "timeout_rate", "throttle_rate")


class FaultSpecError(ValueError):
    """A fault spec is malformed."""


class Fault(enum.StrEnum):
    """What the injector decided for one invocation."""

    THROTTLE = "throttle"
    ERROR = "error"
    TIMEOUT = "timeout"
    HANG = "hang"


@dataclass(frozen=True)
class FaultSpec:
    """Rates (0..1, summing to at most 1), poison key substrings and the RNG seed."""

    error_rate: float = 0.0
    timeout_rate: float = 0.0
    throttle_rate: float = 0.0
    error_keys: tuple[str, ...] = ()
    hang_keys: tuple[str, ...] = ()
    seed: int | None = None

    def __post_init__(self) -> None:
        for name in _RATES:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) \
                    or not 0.0 <= value <= 1.0:
                raise FaultSpecError(f"{name} must be a number in 0..1, not {value!r}")
            object.__setattr__(self, name, float(value))
        if sum(getattr(self, n) for n in _RATES) > 1.0 + 1e-9:
            raise FaultSpecError("error_rate + timeout_rate + throttle_rate must not exceed 1")
        for name in ("error_keys", "hang_keys"):
            value = getattr(self, name)
            if isinstance(value, str) or not all(isinstance(k, str) and k for k in value):
                raise FaultSpecError(f"{name} must be a list of non-empty strings")
            object.__setattr__(self, name, tuple(value))
        if self.seed is not None and (isinstance(self.seed, bool)
                                      or not isinstance(self.seed, int)):
            raise FaultSpecError(f"seed must be an integer or null, not {self.seed!r}")

    @property
    def active(self) -> bool:
        return bool(any(getattr(self, n) for n in _RATES) or self.error_keys or self.hang_keys)

    def to_json(self) -> dict[str, Any]:
        return {"error_rate": self.error_rate, "timeout_rate": self.timeout_rate,
                "throttle_rate": self.throttle_rate, "error_keys": list(self.error_keys),
                "hang_keys": list(self.hang_keys), "seed": self.seed}

    @classmethod
    def from_json(cls, data: Any) -> FaultSpec:
        if isinstance(data, FaultSpec):
            return data
        if not isinstance(data, Mapping):
            raise FaultSpecError(f"a fault spec is a JSON object, not {type(data).__name__}")
        unknown = sorted(set(data) - set(cls.__dataclass_fields__))
        if unknown:
            raise FaultSpecError(f"unknown fault setting(s): {', '.join(unknown)}")
        return cls(**dict(data))

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> FaultSpec | None:
        """The ``LOCALCLOUD_FAULTS`` override, or None when it is unset or empty."""
        raw = env.get(FAULTS_ENV, "").strip()
        if not raw:
            return None
        try:
            return cls.from_json(json.loads(raw))
        except json.JSONDecodeError as exc:
            raise FaultSpecError(f"{FAULTS_ENV} is not JSON: {exc}") from exc


def payload_keys(payload: bytes) -> list[str]:
    """The decoded S3 object keys of an S3-event payload (empty for anything else)."""
    try:
        doc = json.loads(payload) if payload else None
    except (UnicodeDecodeError, json.JSONDecodeError):
        return []
    records = doc.get("Records") if isinstance(doc, dict) else None
    keys = []
    for record in records if isinstance(records, list) else []:
        try:
            keys.append(unquote_plus(record["s3"]["object"]["key"]))
        except (KeyError, TypeError):
            continue
    return keys


class FaultInjector:
    """Thread-safe decisions for one function under one :class:`FaultSpec`; counts what it did."""

    def __init__(self, spec: FaultSpec | None = None) -> None:
        self._lock = threading.Lock()
        self.counts: Counter[str] = Counter()
        self.spec = FaultSpec()
        self._rng = random.Random()
        self.configure(spec or FaultSpec())

    def configure(self, spec: FaultSpec) -> None:
        """Replace the spec (and reseed); the counters keep counting."""
        with self._lock:
            self.spec = spec
            self._rng = random.Random(spec.seed)

    def decide(self, payload: bytes) -> Fault | None:
        """The fault to inject into this invocation, or None to run it normally."""
        with self._lock:
            spec = self.spec
            if not spec.active:
                return None
            fault = None
            if spec.error_keys or spec.hang_keys:
                keys = payload_keys(payload)
                if any(p in k for p in spec.error_keys for k in keys):
                    fault = Fault.ERROR
                elif any(p in k for p in spec.hang_keys for k in keys):
                    fault = Fault.HANG
            if fault is None:
                draw = self._rng.random()
                if draw < spec.throttle_rate:
                    fault = Fault.THROTTLE
                elif draw < spec.throttle_rate + spec.error_rate:
                    fault = Fault.ERROR
                elif draw < spec.throttle_rate + spec.error_rate + spec.timeout_rate:
                    fault = Fault.TIMEOUT
            if fault is not None:
                self.counts[f"injected_{fault.value}s"] += 1
            return fault

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {"faults": self.spec.to_json(), **self.counts}
