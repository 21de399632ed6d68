"""Helpers for the integration tier: a test's view of the shared local cloud and a waiter."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from queue_hygiene import SharedQueues, video_path_queues

from localcloud.cloud import EndpointSession, LocalCloud
from openstack_handler.demos.daemon_config import write_daemon_config

REPO = Path(__file__).resolve().parents[2]


class Pipeline:
    """One test's view of the shared cloud: clients, queue hygiene, invocation counts, a daemon."""

    def __init__(self, cloud: LocalCloud, tmp_path: Path) -> None:
        self.cloud = cloud
        self.results = tmp_path / "results"
        self.state = tmp_path / "state"
        self.config = write_daemon_config(cloud, tmp_path / "daemon.toml", self.results,
                                                self.state, concurrency=2)
        self.log_path = tmp_path / "daemon.log"
        session = EndpointSession(cloud.moto_url)
        self.s3 = session.client("s3")
        self.sqs = session.client("sqs")
        self.bucket = cloud.provisioned.input_bucket

    def shared_queues(self) -> SharedQueues:
        """The cloud's queues, which the tests of the session share (see queue_hygiene)."""
        return video_path_queues(self.cloud)

    def invocations(self) -> int:
        stats = self.cloud.endpoint.health()["functions"][self.cloud.resources.function_name]
        return int(stats.get("invocations", 0))

    def queue_idle(self, url: str) -> bool:
        attrs = self.sqs.get_queue_attributes(
            QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages",
                                          "ApproximateNumberOfMessagesNotVisible"])["Attributes"]
        return attrs["ApproximateNumberOfMessages"] == "0" == \
            attrs["ApproximateNumberOfMessagesNotVisible"]

    def result_files(self) -> list[Path]:
        return sorted(p for p in self.results.rglob("*") if p.is_file())

    def daemon_env(self, **env_overrides: str) -> dict[str, str]:
        """The environment of an `openstack-handler` command against the cloud."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        env.update(self.cloud.client_env())
        env["PYTHONPATH"] = str(REPO)
        env["OPENSTACK_HANDLER_WAIT_TIME_S"] = "1"  # short polls: tests stop quickly
        env.update(env_overrides)
        return env

    @contextmanager
    def daemon(self, **env_overrides: str) -> Iterator[subprocess.Popen[bytes]]:
        env = self.daemon_env(**env_overrides)
        with self.log_path.open("ab") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "openstack_handler", "run", "--config", str(self.config),
                 "--log-format", "json"], env=env, stdout=log, stderr=subprocess.STDOUT)
            try:
                yield proc
            finally:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
                code = proc.wait(timeout=60)
        assert code == 0, f"daemon exit code {code}; log:\n{self.log_path.read_text()[-4000:]}"
