"""The web tier as a real process on a local cloud, and a client that speaks what the course's
client sends (multipart ``inputFile``) over http.client: for the web tier's tests and its
benchmark."""

from __future__ import annotations

import contextlib
import csv
import http.client
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from camera.frames import video_frames
from localcloud.cloud import LocalCloud
from openstack_handler.demos.daemon_config import write_daemon_config, write_web_config
from openstack_handler.demos.local_up import stop_process

REPO = Path(__file__).resolve().parents[1]


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def json(self) -> Any:
        return json.loads(self.body)


def multipart(fields: Mapping[str, tuple[str | None, bytes]]) -> tuple[bytes, str]:
    """A multipart/form-data body: field → (file name or None for a text field, bytes)."""
    boundary = uuid.uuid4().hex
    parts = []
    for name, (filename, data) in fields.items():
        disposition = f'form-data; name="{name}"'
        if filename is not None:
            disposition += f'; filename="{filename}"'
        parts.append(f"--{boundary}\r\nContent-Disposition: {disposition}\r\n"
                     "Content-Type: application/octet-stream\r\n\r\n".encode("utf-8", "surrogateescape")
                     + data + b"\r\n")
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), \
        f"multipart/form-data; boundary={boundary}"


def request(url: str, method: str = "GET", path: str = "/", *, body: bytes | None = None,
            headers: Mapping[str, str] | None = None, timeout_s: float = 120.0) -> Answer:
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout_s)
    try:
        connection.request(method, path, body=body, headers=dict(headers or {}))
        response = connection.getresponse()
        return Answer(response.status, {k.lower(): v for k, v in response.getheaders()},
                      response.read())
    finally:
        connection.close()


def post_file(url: str, filename: str | None, data: bytes, *, path: str = "/",
              accept: str | None = None, field_name: str = "inputFile",
              headers: Mapping[str, str] | None = None) -> Answer:
    body, content_type = multipart({field_name: (filename, data)})
    sent = {"Content-Type": content_type, **(headers or {})}
    if accept:
        sent["Accept"] = accept
    return request(url, "POST", path, body=body, headers=sent)


@dataclass
class WebTier:
    """A running ``openstack-handler web`` process; its log lines are kept."""

    process: subprocess.Popen[str]
    url: str
    config: Path
    lines: list[str] = field(default_factory=list)

    @property
    def pid(self) -> int:
        return self.process.pid

    def rss_kb(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise AssertionError("no VmRSS")

    def open_files(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def events(self, name: str) -> list[dict[str, Any]]:
        found = []
        for line in list(self.lines):
            with contextlib.suppress(ValueError):
                doc = json.loads(line)
                if doc.get("event") == name:
                    found.append(doc)
        return found


def write_configs(cloud: LocalCloud, work: Path, *, daemon_extra: Mapping[str, Any] | None = None,
                  web_extra: Mapping[str, Any] | None = None) -> Path:
    """The daemon's and the web tier's configs for *cloud* under *work*; the web one's path."""
    daemon = write_daemon_config(cloud, work / "daemon.toml", work / "results", work / "state",
                                 2, extra=daemon_extra)
    return write_web_config(cloud, work / "web.toml", daemon, extra=web_extra)


@contextlib.contextmanager
def web_tier(cloud: LocalCloud, config: Path, *, env: Mapping[str, str] | None = None,
             start_timeout_s: float = 60.0) -> Iterator[WebTier]:
    """Start the web tier on *config* and wait for its ``web.listening`` line."""
    process = subprocess.Popen(
        [sys.executable, "-m", "openstack_handler", "web", "--config", str(config)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO,
        env={**os.environ, **cloud.client_env(), **(env or {})})
    lines: list[str] = []
    listening = threading.Event()
    url: list[str] = []

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line)
            if not listening.is_set() and '"web.listening"' in line:
                url.append(json.loads(line)["url"])
                listening.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    deadline = time.monotonic() + start_timeout_s
    while not listening.wait(0.1):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            reader.join(5)
            raise AssertionError("the web tier did not start:\n" + "".join(lines[-30:]))
    tier = WebTier(process, url[0], config, lines)
    try:
        yield tier
    finally:
        stop_process(process)
        reader.join(5)


def expected_names(course_data: Path) -> dict[str, str]:
    """Clip stem → the person in it."""
    with (course_data / "expected.csv").open(newline="") as handle:
        return {Path(row["video"]).stem: row["name"] for row in csv.DictReader(handle)}


def course_frames(course_data: Path, count: int) -> list[tuple[str, bytes, str]]:
    """*count* JPEG frames of the course's 8 clips, spread over each clip, as
    (file name, bytes, the person in it), the clips interleaved."""
    names = expected_names(course_data)
    per_clip: dict[str, list[bytes]] = {}
    for stem in sorted(names):
        frames = [f.data for f in video_frames(course_data / "videos" / f"{stem}.mp4")]
        per_clip[stem] = frames
    chosen: list[tuple[str, bytes, str]] = []
    round_ = 0
    while len(chosen) < count:
        for stem, frames in per_clip.items():
            if len(chosen) == count:
                break
            index = (round_ * 7) % len(frames)
            chosen.append((f"{stem}_{round_:02d}.jpg", frames[index], names[stem]))
        round_ += 1
    return chosen
