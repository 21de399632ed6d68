"""What one invocation cost, read from Lambda's ``REPORT`` line (``Invoke(LogType=Tail)``).

Lambda ends every invocation's log with one platform line::

    REPORT RequestId: 3f…\tDuration: 1999.43 ms\tBilled Duration: 2000 ms\tMemory Size: 512 MB\t
    Max Memory Used: 88 MB\tInit Duration: 310.20 ms

and returns the last 4 KB of that log, base64-encoded, in ``X-Amz-Log-Result`` when asked with
``LogType=Tail``. AWS and our own Lambda service write the same line, so the daemon accounts for
both places one way: GB-seconds are ``Memory Size`` × ``Billed Duration``, the unit Lambda's price
is quoted in. Pure functions; unit-tested on lines from both.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass

#: AWS Lambda's on-demand price for x86 in us-east-1: per GB-second of billed duration, and per
#: request (USD; "Lambda pricing", first tier).
AWS_PRICE_PER_GB_S = 0.0000166667
AWS_PRICE_PER_REQUEST = 0.0000002

_FIELD = re.compile(r"(?P<name>[A-Za-z ]+): (?P<value>[0-9.]+) (?:ms|MB)")


@dataclass(frozen=True)
class InvocationReport:
    """The figures of one REPORT line."""

    request_id: str
    duration_ms: float
    billed_ms: int
    memory_mb: int
    max_memory_used_mb: int
    init_ms: float | None = None  #: only on a cold start

    @property
    def gb_seconds(self) -> float:
        return self.memory_mb / 1024 * self.billed_ms / 1000


def parse_report(log_tail: str) -> InvocationReport | None:
    """The last REPORT line of *log_tail* (the decoded ``LogResult``), or None without one."""
    lines = [line for line in log_tail.splitlines() if line.startswith("REPORT RequestId: ")]
    if not lines:
        return None
    line = lines[-1]
    request_id = line[len("REPORT RequestId: "):].split("\t", 1)[0].strip()
    fields = {m["name"].strip(): m["value"] for m in _FIELD.finditer(line)}
    try:
        return InvocationReport(
            request_id=request_id, duration_ms=float(fields["Duration"]),
            billed_ms=int(float(fields["Billed Duration"])),
            memory_mb=int(fields["Memory Size"]),
            max_memory_used_mb=int(fields["Max Memory Used"]),
            init_ms=float(fields["Init Duration"]) if "Init Duration" in fields else None)
    except (KeyError, ValueError):
        return None


def report_from_log_result(log_result: str | None) -> InvocationReport | None:
    """Decode an Invoke response's ``LogResult`` (base64) and parse its REPORT line."""
    if not log_result:
        return None
    try:
        text = base64.b64decode(log_result, validate=True).decode("utf-8", "replace")
    except (binascii.Error, ValueError):
        return None
    return parse_report(text)


@dataclass(frozen=True)
class Pricing:
    """What a target's work costs: per GB-second and per request (AWS's x86 price by default:
    for a private target that is what its work would have cost on Lambda, i.e. what it saved)."""

    per_gb_s: float = AWS_PRICE_PER_GB_S
    per_request: float = AWS_PRICE_PER_REQUEST

    def cost(self, *, gb_seconds: float, requests: int) -> float:
        return gb_seconds * self.per_gb_s + requests * self.per_request
