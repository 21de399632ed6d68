"""What `camera send` prints: a line per frame as it is answered, then the summary in the form of
the course's workload generator, with latencies."""

from __future__ import annotations

from camera.run import FrameResult, RunReport

UNCONFIRMED = ("unknown_person: the expected person nearest, borderline, not yet confirmed by "
               "the frames before")


def frame_line(result: FrameResult, width: int = 28) -> str:
    latency = f"{result.latency_s:.3f} s" if result.latency_s is not None else "-"
    if result.completed:
        outcome = result.result or ""
        if result.correct is False:
            outcome += f"  WRONG (want {result.expected})"
        elif result.unconfirmed:
            outcome += f"  (nearest {result.expected}, not yet confirmed)"
    else:
        outcome = f"FAILED: {result.error}"
    return f"{result.frame.filename:<{width}} {outcome:<28} {latency}"


def summary(report: RunReport) -> str:
    stats = report.latency_stats()
    latency = ("latency avg {avg:.3f} s, p50 {p50:.3f} s, p95 {p95:.3f} s, max {max:.3f} s"
               .format(**stats) if stats else "latency: no request completed")
    lines = [
        "+++++ Test Result Statistics +++++",
        f"Total number of requests: {len(report.results)}",
        f"Total number of requests completed successfully: {len(report.completed)}",
        f"Total number of failed requests: {len(report.failed)}",
        f"Total number of correct predictions : {report.correct}",
        f"Total number of wrong predictions: {report.wrong}",
        *([f"Total number of unconfirmed predictions: {report.unconfirmed} ({UNCONFIRMED})"]
          if report.unconfirmed else []),
        f"Total Test Duration: {report.duration_s:.2f} (seconds)",
        latency,
    ]
    if report.duplicates:
        lines.append(f"Duplicate answers received (and dropped): {report.duplicates}")
    lines.append("++++++++++++++++++++++++++++++++++++")
    return "\n".join(lines)
