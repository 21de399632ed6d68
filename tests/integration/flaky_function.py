"""The real recognition function behind a gate that fails its first attempts, per S3 key: what
Lambda's retries of an Event invocation meet when the cause is passing (``FAIL_TIMES=2``) or not
(``FAIL_TIMES=-1``: every attempt). Each attempt is recorded in ``$ATTEMPTS_DIR``. The models
load at import, as the real function's do (Lambda's init phase)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any
from urllib.parse import unquote_plus

from lambda_image.handlers import s3_handler


def handler(event: dict[str, Any], context: Any) -> Any:
    keys = [unquote_plus(r["s3"]["object"]["key"]) for r in event.get("Records", [])]
    fail_times = int(os.environ["FAIL_TIMES"])
    for key in keys:
        path = Path(os.environ["ATTEMPTS_DIR"]) / hashlib.sha256(key.encode()).hexdigest()
        with path.open("a", encoding="utf-8") as handle:
            handle.write(f"{context.aws_request_id}\n")
        attempts = len(path.read_text(encoding="utf-8").splitlines())
        if fail_times < 0 or attempts <= fail_times:
            raise RuntimeError(f"attempt {attempts} at {key} fails on purpose")
    return s3_handler(event, context)
