"""Which inference runtime the processes under a command have loaded, read from /proc while it runs.

A process that imported torch has ``libtorch_cpu.so`` mapped; one that runs onnxruntime has its
``onnxruntime_pybind11_state`` extension mapped. `RuntimeWatch` samples every descendant of a
root process (the demo's CLI, the test itself) a few times a second, so the warm workers, which
load their runtime at init and live as long as the cloud, are seen whatever their lifetime.
"""

from __future__ import annotations

import os
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Self

from lambda_service.environment import descendants

TORCH_LIBRARY = "libtorch_cpu.so"
ONNX_LIBRARY = "onnxruntime_pybind11_state"


def _mapped(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return ""


@dataclass
class RuntimeWatch:
    """Samples the descendants of *root* (default: this process) until stopped."""

    root: int = field(default_factory=os.getpid)
    interval_s: float = 0.25
    torch: dict[int, str] = field(default_factory=dict)  # pid -> its command line
    onnx: dict[int, str] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def sample(self) -> None:
        for pid in descendants(self.root):
            maps = _mapped(pid)
            for library, seen in ((TORCH_LIBRARY, self.torch), (ONNX_LIBRARY, self.onnx)):
                if library in maps and pid not in seen:
                    try:
                        seen[pid] = Path(f"/proc/{pid}/cmdline").read_bytes().replace(
                            b"\0", b" ").decode(errors="replace")
                    except OSError:
                        seen[pid] = "?"

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sample()

    def __enter__(self) -> Self:
        self._thread = threading.Thread(target=self._run, name="runtime-watch", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def assert_onnx_only(self, *, at_least: int = 1) -> None:
        """No process loaded torch, and at least *at_least* ran onnxruntime (not a vacuous pass)."""
        assert not self.torch, f"torch was loaded by: {self.torch}"
        assert len(self.onnx) >= at_least, (
            f"{len(self.onnx)} process(es) ran onnxruntime, expected at least {at_least}")


def run_watched(argv: list[str], *, timeout: float, **popen: object,
                ) -> tuple[subprocess.CompletedProcess[str], RuntimeWatch]:
    """`subprocess.run(argv, capture_output=True, text=True)` with a RuntimeWatch on its tree."""
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            **popen)  # type: ignore[call-overload]
    with proc, RuntimeWatch(root=proc.pid) as watch:
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            raise AssertionError(f"{argv[:5]} ran past {timeout} s:\n{out[-2000:]}"
                                 f"\n{err[-2000:]}") from None
    return subprocess.CompletedProcess(argv, proc.returncode, out, err), watch
