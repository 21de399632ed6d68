"""``openstack-handler status``: queue depths and what this machine's daemons did (their one state
DB), as a readable table."""

from __future__ import annotations

import json
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from openstack_handler.daemon.aws_clients import Endpoint
from openstack_handler.daemon.report import AWS_PRICE_PER_GB_S, AWS_PRICE_PER_REQUEST, Pricing
from openstack_handler.daemon.settings import Settings
from openstack_handler.daemon.state import TARGET_COUNTER, StateDB, StateSnapshot, TargetTotals

_DEPTH_ATTRIBUTES = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible",
                     "ApproximateNumberOfMessagesDelayed", "RedrivePolicy"]

#: counters in the order the table shows them, with their labels.
COUNTER_LABELS = (
    ("videos_ok", "videos processed"),
    ("videos_failed", "videos failed (error result or too large)"),
    ("invocations_failed", "invocations failed (left for redelivery)"),
    ("duplicates", "duplicates dropped (see `forget`)"),
    ("input_invalid", "invalid input messages (left for DLQ)"),
    ("results_written", "result files written"),
    ("results_invalid", "invalid output messages (left for DLQ)"),
)


@dataclass(frozen=True)
class QueueDepth:
    """One queue's approximate depths, or why they could not be read."""

    name: str
    url: str | None
    visible: int | None = None
    in_flight: int | None = None
    delayed: int | None = None
    dlq_url: str | None = None
    #: why the depths could not be read: short (the table's note) and in one line (stderr).
    error: str | None = None
    reason: str | None = None

    @property
    def unreadable(self) -> bool:
        return self.url is not None and self.error is not None


@dataclass(frozen=True)
class TargetLine:
    """One target's totals, priced at its own rate and at AWS Lambda's."""

    totals: TargetTotals
    pricing: Pricing
    configured: bool  #: named by today's settings (else: a target of an earlier config)

    @property
    def cost(self) -> float:
        return self.pricing.cost(gb_seconds=self.totals.gb_seconds,
                                 requests=self.totals.invocations)

    @property
    def lambda_cost(self) -> float:
        return Pricing(AWS_PRICE_PER_GB_S, AWS_PRICE_PER_REQUEST).cost(
            gb_seconds=self.totals.gb_seconds, requests=self.totals.invocations)


@dataclass(frozen=True)
class StatusReport:
    queues: tuple[QueueDepth, ...]
    state: StateSnapshot | None
    state_path: str
    targets: tuple[TargetLine, ...] = ()

    @property
    def unreadable(self) -> list[QueueDepth]:
        """The configured queues whose depths could not be read."""
        return [q for q in self.queues if q.unreadable]

    def problem(self) -> str | None:
        """One line saying why the queues could not be read (None: all were read)."""
        bad = self.unreadable
        if not bad:
            return None
        configured = sum(q.url is not None for q in self.queues)
        return (f"{len(bad)} of {configured} queue(s) could not be read "
                f"({', '.join(q.name for q in bad)}): {bad[0].reason or bad[0].error}")


def queue_depth(sqs: Any, name: str, url: str | None,
                endpoint: Endpoint | None = None) -> QueueDepth:
    """Read one queue's depths; the DLQ URL is taken from its redrive policy when it has one."""
    if not url:
        return QueueDepth(name, None, error="not configured")
    try:
        attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=_DEPTH_ATTRIBUTES)
    except ClientError as exc:
        error = exc.response.get("Error", {})
        code = error.get("Code", "ClientError")
        return QueueDepth(name, url, error=code, reason=f"{name} queue {url}: {code}: "
                          f"{' '.join(str(error.get('Message', '')).split())}")
    except BotoCoreError as exc:
        reason = endpoint.unreachable(exc) if endpoint else f"{type(exc).__name__}: {exc}"
        return QueueDepth(name, url, error=type(exc).__name__, reason=reason)
    values = attrs.get("Attributes", {})
    dlq_url = None
    if values.get("RedrivePolicy"):
        try:
            arn = json.loads(values["RedrivePolicy"])["deadLetterTargetArn"]
            dlq_url = sqs.get_queue_url(QueueName=arn.rsplit(":", 1)[-1])["QueueUrl"]
        except (ValueError, KeyError, ClientError, BotoCoreError):
            dlq_url = None
    return QueueDepth(name, url, visible=int(values.get("ApproximateNumberOfMessages", 0)),
                      in_flight=int(values.get("ApproximateNumberOfMessagesNotVisible", 0)),
                      delayed=int(values.get("ApproximateNumberOfMessagesDelayed", 0)),
                      dlq_url=dlq_url)


def collect_status(settings: Settings, sqs: Any, endpoint: Endpoint | None = None) -> StatusReport:
    """Queue depths (input, output and their dead-letter queues) and the daemon's state DB."""
    inp = queue_depth(sqs, "input", settings.input_queue_url, endpoint)
    out = queue_depth(sqs, "output", settings.output_queue_url, endpoint)
    inp_dlq = queue_depth(sqs, "input DLQ", settings.input_dlq_url or inp.dlq_url, endpoint)
    out_dlq = queue_depth(sqs, "output DLQ", settings.output_dlq_url or out.dlq_url, endpoint)
    # serverless mode: the events the function gave up on (only where the settings name it)
    failed = ((queue_depth(sqs, "failed", settings.failure_queue_url, endpoint),)
              if settings.failure_queue_url else ())
    snapshot = None
    totals: list[TargetTotals] = []
    if settings.state_db_path.exists():
        with StateDB(settings.state_db_path) as state:
            snapshot = state.snapshot()
            totals = state.target_totals()
    return StatusReport((inp, inp_dlq, out, out_dlq, *failed), snapshot, str(settings.state_db_path),
                        target_lines(settings, totals))


def target_lines(settings: Settings, totals: list[TargetTotals]) -> tuple[TargetLine, ...]:
    """The settings' targets in their order (those that ran nothing yet too), then any other
    target the state DB remembers (an earlier configuration's), priced at the settings' rate."""
    by_name = {t.name: t for t in totals}
    lines = [TargetLine(by_name.pop(t.name, TargetTotals(t.name)),
                        Pricing(t.price_per_gb_s or 0.0, t.price_per_request or 0.0), True)
             for t in settings.placement_targets]
    default = Pricing(settings.price_per_gb_s, settings.price_per_request)
    lines += [TargetLine(t, default, False) for t in by_name.values()]
    return tuple(lines)


def render_targets(lines: tuple[TargetLine, ...]) -> list[str]:
    """The per-target table: invocations, failures, share, p50/p95, GB-seconds, cost."""
    total = sum(line.totals.invocations for line in lines)
    if not total:
        return []
    rows = [("TARGET", "INVOCATIONS", "FAILED", "SHARE", "P50 MS", "P95 MS", "GB-S", "COST",
             "ON LAMBDA")]
    for line in lines:
        t = line.totals
        rows.append((t.name + ("" if line.configured else " (not configured)"),
                     str(t.invocations), str(t.failures),
                     f"{100 * t.invocations / total:.0f}%",
                     "-" if t.p50_ms is None else f"{t.p50_ms:.0f}",
                     "-" if t.p95_ms is None else f"{t.p95_ms:.0f}",
                     f"{t.gb_seconds:.1f}", f"${line.cost:.6f}", f"${line.lambda_cost:.6f}"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    out = ["  ".join([r[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(r[1:], widths[1:],
                                                                           strict=True)])
           for r in rows]
    saved = sum(line.lambda_cost - line.cost for line in lines)
    out.append(f"saved against running all of it on Lambda (AWS's x86 price per GB-s and per "
               f"request): ${saved:.6f}")
    unreported = sum(line.totals.unreported for line in lines)
    if unreported:
        out.append(f"  {unreported} invocation(s) came back without a REPORT line (failed "
                   "before the function ran): counted, not billed")
    return out


def _cell(value: int | None) -> str:
    return "-" if value is None else str(value)


def render_status(report: StatusReport, *, now: Callable[[], float] = time.time,
                  config: str | None = None) -> str:
    """The report as a plain-text table."""
    rows = [("QUEUE", "VISIBLE", "IN FLIGHT", "DELAYED", "NOTE")]
    for q in report.queues:
        note = q.error or ""
        if not note and q.name.endswith(" DLQ") and q.visible:
            note = (f"dead letters: fix the cause, then `openstack-handler redrive "
                    f"--queue {q.name.split()[0]}`")
        elif not note and q.name == "failed" and q.visible:
            note = ("events the function gave up on: fix the cause, then `openstack-handler "
                    "redrive --queue failed`")
        rows.append((q.name, _cell(q.visible), _cell(q.in_flight), _cell(q.delayed), note))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = []
    for r in rows:
        cells = [r[0].ljust(widths[0])] + [r[i].rjust(widths[i]) for i in (1, 2, 3)]
        lines.append("  ".join(cells + [r[4]]).rstrip())
    lines.append("")
    if report.state is None:
        lines.append(f"no state yet ({report.state_path}): this daemon has not run here")
        return "\n".join(lines) + "\n"
    counters = report.state.counters
    labels = list(COUNTER_LABELS) + [(k, k) for k in sorted(counters)
                                     if k not in dict(COUNTER_LABELS)
                                     and not k.startswith(TARGET_COUNTER)]
    width = max(len(label) for _, label in labels)
    lines.append("THIS MACHINE (every replica: one state DB)")
    for key, label in labels:
        lines.append(f"{label.ljust(width)}  {counters.get(key, 0)}")
    lines.append(f"{'distinct videos remembered'.ljust(width)}  {report.state.processed_total}")
    lines.append("")
    targets = render_targets(report.targets)
    if targets:
        lines += ["WHERE THE FUNCTION RAN (every replica)", *targets, ""]
    dup = report.state.last_duplicate
    if dup is not None:
        stamp = datetime.fromtimestamp(dup.at, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        lines.append(f"last duplicate dropped: {stamp} ({max(0, int(now() - dup.at))} s ago) "
                     f"s3://{dup.bucket}/{dup.key}")
        lines.append(f"  {dup.why}")
        lines.append(f"  to process it again: openstack-handler forget --config "
                     f"{shlex.quote(config or 'FILE')} {shlex.quote(dup.key)}, then upload it "
                     "again")
    if report.state.last_error is None:
        lines.append("last error: none")
    else:
        at = report.state.last_error_at or 0.0
        stamp = datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        ago = max(0, int(now() - at))
        lines.append(f"last error: {stamp} ({ago} s ago) [{report.state.last_error_source}]")
        lines.append(f"  {report.state.last_error}")
    return "\n".join(lines) + "\n"
