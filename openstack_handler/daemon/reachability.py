"""``check-config --connect``: do the settings point at something? Reads each queue's attributes
and the function's configuration through the endpoints the daemon would use, and says per
setting whether it answered, does not exist, or could not be reached (and why)."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from openstack_handler.daemon.aws_clients import QUEUE_SETTINGS, Endpoint
from openstack_handler.daemon.exit_codes import ExitCode
from openstack_handler.daemon.settings import Settings

_MISSING = frozenset({"AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist",
                      "ResourceNotFoundException"})


class Outcome(enum.Enum):
    OK = "ok"
    MISSING = "does not exist"
    UNREACHABLE = "unreachable"


@dataclass(frozen=True)
class Probe:
    """What one setting's target answered."""

    setting: str
    target: str
    outcome: Outcome
    detail: str = ""

    def line(self, width: int) -> str:
        text = f"  {self.setting.ljust(width)}  {self.target}  {self.outcome.value}"
        return text + (f": {self.detail}" if self.detail else "")


def _failure(setting: str, target: str, exc: Exception, endpoint: Endpoint) -> Probe:
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", "ClientError"))
        message = " ".join(str(error.get("Message", "")).split())
        outcome = Outcome.MISSING if code in _MISSING else Outcome.UNREACHABLE
        return Probe(setting, target, outcome, f"{code}: {message}".rstrip(": "))
    return Probe(setting, target, Outcome.UNREACHABLE, endpoint.unreachable(exc))


def probe_queues(settings: Settings, sqs: Any, endpoint: Endpoint) -> list[Probe]:
    probes = []
    for name in QUEUE_SETTINGS:
        url = getattr(settings, name)
        if not url:
            continue
        try:
            attrs = sqs.get_queue_attributes(
                QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"])["Attributes"]
        except (BotoCoreError, ClientError) as exc:
            probes.append(_failure(name, url, exc, endpoint))
            continue
        probes.append(Probe(name, url, Outcome.OK,
                            f"{attrs.get('ApproximateNumberOfMessages', '?')} visible"))
    return probes


def probe_function(settings: Settings, lam: Any, endpoint: Endpoint, *,
                   function_name: str | None = None, setting: str = "function_name") -> Probe:
    """The function's configuration; *function_name*/*setting* for a target's own function."""
    name = function_name or settings.function_name
    try:
        config = lam.get_function_configuration(FunctionName=name)
    except (BotoCoreError, ClientError) as exc:
        return _failure(setting, name, exc, endpoint)
    timeout = config.get("Timeout")
    detail = f"timeout {timeout} s"
    if isinstance(timeout, int) and timeout > settings.function_timeout_s:
        detail += (f", above function_timeout_s = {settings.function_timeout_s}: the daemon's "
                   "invoke read timeout may cut it short")
    return Probe(setting, name, Outcome.OK, detail)


def render(sqs_endpoint: Endpoint, queues: list[Probe], lambda_endpoint: Endpoint,
           function: Probe, more: list[tuple[Endpoint, Probe]] | None = None) -> str:
    """The probes as lines; *more*: the further targets' endpoints and functions."""
    functions = [(lambda_endpoint, function), *(more or [])]
    width = max(len(p.setting) for p in [*queues, *(f for _, f in functions)])
    lines = [f"SQS at {sqs_endpoint}", *(p.line(width) for p in queues)]
    for endpoint, probe in functions:
        lines += [f"Lambda at {endpoint}", probe.line(width)]
    return "\n".join(lines) + "\n"


def exit_code(probes: list[Probe]) -> ExitCode:
    """78 when something the settings name does not exist (fix the config), 69 when something
    could not be reached (perhaps later), else 0."""
    outcomes = {p.outcome for p in probes}
    if Outcome.MISSING in outcomes:
        return ExitCode.CONFIG_ERROR
    if Outcome.UNREACHABLE in outcomes:
        return ExitCode.UNAVAILABLE
    return ExitCode.OK
