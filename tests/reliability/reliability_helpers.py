"""Helpers for the reliability tier: the real daemon process against the real local cloud (moto,
the Lambda endpoint with fault injection, the real recognition function), with short settings."""

from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
import sys
from collections import defaultdict
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polling
from daemon_helpers import json_log_lines

from localcloud.cloud import EndpointSession, LocalCloud
from openstack_handler.daemon.results_store import _TMP_PREFIX, ResultsStore
from openstack_handler.daemon.settings import settings_toml

REPO = Path(__file__).resolve().parents[2]
CLIPS = ("test_0.mp4", "test_1.mp4", "test_2.mp4", "test_4.mp4", "test_5.mp4", "test_6.mp4",
         "test_7.mp4", "test_8.mp4")

#: the daemon's settings in these tests: short polls, a short visibility timeout kept alive by the
#: heartbeat, quick retries and outage backoff.
FAST_SETTINGS: dict[str, Any] = {
    "concurrency": 2, "wait_time_s": 1, "visibility_timeout_s": 8, "grace_period_s": 6,
    "invoke_max_attempts": 4, "invoke_backoff_initial_s": 0.2, "invoke_backoff_max_s": 1.0,
    "outage_backoff_max_s": 2.0,
}


#: the reliability rigs' predicates make several SQS calls each: poll them less eagerly.
wait_for = functools.partial(polling.wait_for, interval_s=0.2)


@dataclass
class Row:
    """One line of the reliability table."""

    test: str
    runs: int = 0  #: daemon processes started
    messages: int = 0  #: videos (input messages) the test sent, plus bad messages
    faults: str = ""
    lost: int = 0
    duplicates: int = 0
    seconds: float = 0.0
    notes: str = ""


@dataclass
class Outcome:
    """What the results dir says about a set of videos."""

    complete: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    wrong: dict[str, str] = field(default_factory=dict)
    duplicated: dict[str, list[str]] = field(default_factory=dict)
    unexpected: list[str] = field(default_factory=list)
    temp_files: list[str] = field(default_factory=list)


class Rig:
    """One test's view of the shared cloud: clients, uploads, daemons, result checks."""

    def __init__(self, cloud: LocalCloud, tmp_path: Path, expected_csv: dict[str, str],
                 **settings: Any) -> None:
        self.cloud = cloud
        self.tmp_path = tmp_path
        self.expected_csv = expected_csv
        self.results = tmp_path / "results"
        self.store = ResultsStore(self.results)
        self.state = tmp_path / "state"
        values = cloud.daemon_settings(self.results, self.state, concurrency=2)
        values.update(FAST_SETTINGS)
        values.update(settings)
        self.config = tmp_path / "daemon.toml"
        self.config.write_text(settings_toml(values), encoding="utf-8")
        self.log_path = tmp_path / "daemon.log"
        session = EndpointSession(cloud.moto_url)
        self.s3 = session.client("s3")
        self.sqs = session.client("sqs")
        self.p = cloud.provisioned
        self.bucket = self.p.input_bucket
        self.videos: dict[str, str] = {}  # key -> clip
        self.runs = 0
        self.procs: list[subprocess.Popen[bytes]] = []

    # -- queues ------------------------------------------------------------------------------
    def set_max_receive_count(self, count: int, output_visibility_s: int = 6) -> None:
        """Both queues' maxReceiveCount; the output queue's own visibility timeout short too
        (the drainer receives with the queue's default)."""
        for queue, dlq_arn in ((self.p.input_queue_url, self.p.input_dlq_arn),
                               (self.p.output_queue_url, self.p.output_dlq_arn)):
            attributes = {"RedrivePolicy": json.dumps(
                {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(count)})}
            if queue == self.p.output_queue_url:
                attributes["VisibilityTimeout"] = str(output_visibility_s)
            self.sqs.set_queue_attributes(QueueUrl=queue, Attributes=attributes)

    def depth(self, url: str) -> tuple[int, int]:
        attrs = self.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=[
            "ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"])["Attributes"]
        return (int(attrs["ApproximateNumberOfMessages"]),
                int(attrs["ApproximateNumberOfMessagesNotVisible"]))

    def idle(self) -> bool:
        return all(self.depth(u) == (0, 0) for u in (self.p.input_queue_url,
                                                      self.p.output_queue_url))

    # -- uploads -----------------------------------------------------------------------------
    def upload(self, keys: dict[str, str], course_data: Path) -> None:
        """Upload each key (key -> clip file name) concurrently; each is a distinct video."""
        def put(item: tuple[str, str]) -> None:
            self.s3.upload_file(str(course_data / "videos" / item[1]), self.bucket, item[0])

        with ThreadPoolExecutor(max_workers=4) as pool:
            list(pool.map(put, keys.items()))
        self.videos.update(keys)

    # -- the daemon --------------------------------------------------------------------------
    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("AWS_", "NOTIFY_SOCKET", "WATCHDOG_"))}
        env.update(self.cloud.client_env())
        env["PYTHONPATH"] = str(REPO)
        env.update(extra)
        return env

    def start(self, **env: str) -> subprocess.Popen[bytes]:
        with self.log_path.open("ab") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "openstack_handler", "run", "--config", str(self.config),
                 "--log-format", "json"], env=self.env(**env), stdout=log,
                stderr=subprocess.STDOUT)
        self.runs += 1
        self.procs.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[bytes], timeout_s: float = 60) -> int:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        return proc.wait(timeout=timeout_s)

    def kill_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "openstack_handler", *args, "--config",
                               str(self.config)], env=self.env(), capture_output=True, text=True,
                              timeout=60, check=False)

    def log_events(self) -> list[dict[str, Any]]:
        """The JSON lines every daemon of this rig logged so far (none before the first start)."""
        if not self.log_path.exists():
            return []
        return json_log_lines(self.log_path.read_text(encoding="utf-8", errors="replace"))

    def log_tail(self, chars: int = 6000) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")[-chars:]

    # -- the function's counters -------------------------------------------------------------
    def function_stats(self) -> dict[str, Any]:
        return self.cloud.function_stats()

    # -- results -----------------------------------------------------------------------------
    def files(self) -> list[Path]:
        return sorted(p for p in self.results.rglob("*") if p.is_file()) \
            if self.results.exists() else []

    def done(self, keys: Iterable[str]) -> bool:
        return all(self.store.path_for(k, ".csv").exists() or
                   self.store.path_for(k, ".error").exists() for k in keys)

    def outcome(self, keys: Iterable[str] | None = None) -> Outcome:
        """Check every video's result file against the expected CSV text (exactly)."""
        keys = list(self.videos if keys is None else keys)
        out = Outcome()
        by_path: dict[Path, list[str]] = defaultdict(list)
        for path in self.files():
            by_path[path].append("?")
        for key in keys:
            csv, err = self.store.path_for(key, ".csv"), self.store.path_for(key, ".error")
            present = [p for p in (csv, err) if p.exists()]
            for p in present:
                by_path.pop(p, None)
            if len(present) > 1:
                out.duplicated[key] = [p.name for p in present]
            if not csv.exists():
                out.missing.append(key)
                continue
            text = csv.read_text(encoding="utf-8")
            want = self.expected_csv[self.videos[key]]
            if text != want:
                out.wrong[key] = text
            else:
                out.complete.append(key)
        out.unexpected = sorted(str(p.relative_to(self.results)) for p in by_path
                                if not p.name.startswith(_TMP_PREFIX))
        out.temp_files = sorted(str(p.relative_to(self.results)) for p in by_path
                                if p.name.startswith(_TMP_PREFIX))
        return out
