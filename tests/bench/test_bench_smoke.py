"""The benchmark code path at a tiny scale, so `make bench` cannot rot between runs: the real daemon
against the synthetic function (a few messages, concurrency 2), then the report built from it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import orchestration, report

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def test_orchestration_bench_quick_run_writes_results_and_report(tmp_path: Path) -> None:
    # GIVEN the orchestration bench at its smallest (2 slots, 0.2 s function, 4 no-op messages)
    # WHEN it runs end to end
    assert orchestration.main(["--quick", "--out", str(tmp_path)]) == 0
    # THEN every message came back as a result file, and the numbers are sane
    data = json.loads((tmp_path / "orchestration.json").read_text())
    assert set(data["sites"]) == {"moto", "lean_sqs"}  # queues on moto, and on the lean SQS
    for site, measured in data["sites"].items():
        (point,) = measured["scaling"]
        assert point["concurrency"] == 2 and point["messages"] == 4
        assert 0 < point["efficiency"] <= 1.05
        (noop,) = measured["noop"]
        assert noop["throughput_per_s"] > 0 and noop["daemon_cpu_ms_per_message"] > 0
        assert noop[f"{site}_cpu_ms_per_message"] > 0  # the queue server's CPU was read
    assert data["idle"]["torch_mapped"] is False and data["idle"]["rss_mb"] > 0
    # AND the report renders from whatever JSON is there
    report.main(["--out", str(tmp_path), "--no-plots"])
    assert "Orchestration" in (tmp_path / "REPORT.md").read_text()
