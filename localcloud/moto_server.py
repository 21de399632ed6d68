"""moto server (S3, SQS, DynamoDB over HTTP) as a managed subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Self

from lambda_service.net import free_port, wait_http_ready
from localcloud.s3_lambda_delivery import ENDPOINT_ENV


class MotoServer:
    """A moto server on 127.0.0.1 in its own process; state lives in memory only."""

    #: moto's server with our one performance patch (see localcloud.moto_main).
    MODULE = "localcloud.moto_main"

    def __init__(self, *, host: str = "127.0.0.1", port: int | None = None,
                 log_path: Path | None = None, lambda_url: str | None = None) -> None:
        """*lambda_url*: the Lambda service S3's LambdaFunctionConfigurations invoke (see
        :mod:`localcloud.s3_lambda_delivery`); None: such notifications are logged and dropped."""
        self.host = host
        self.port = port or free_port(host)
        self.log_path = log_path
        self.lambda_url = lambda_url
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, *, timeout_s: float = 30.0) -> Self:
        env = {k: v for k, v in os.environ.items() if k != ENDPOINT_ENV}
        if self.lambda_url:
            env[ENDPOINT_ENV] = self.lambda_url
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        self._proc = subprocess.Popen(
            [sys.executable, "-m", self.MODULE, "-H", self.host, "-p", str(self.port)],
            stdout=out, stderr=subprocess.STDOUT, env=env,
        )
        wait_http_ready(f"{self.url}/moto-api/", timeout_s=timeout_s,
                        is_alive=lambda: self._proc is not None and self._proc.poll() is None)
        return self

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def reset(self) -> None:
        """Drop every resource (moto's own reset API), e.g. between tests."""
        request = urllib.request.Request(f"{self.url}/moto-api/reset", method="POST")
        with urllib.request.urlopen(request, timeout=10):
            pass

    def stop(self) -> None:
        if self._proc and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
