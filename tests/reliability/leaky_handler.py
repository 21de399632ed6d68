"""The S3 handler with a leak added on purpose: each invocation keeps 1 MB for good.

It shows that the soak's slope catches what a real leak would look like (a cache that is
never trimmed, a list of results kept per invocation). 1 MB is above glibc's mmap threshold, so
each block is new resident memory at once; a leak of 256 kB a call was served from the heap's
free space first and showed only about a tenth of its size over 120 calls, which is why the
long soak in `make bench` runs 2,000.
"""

from __future__ import annotations

from typing import Any

from lambda_image import handlers

LEAK_BYTES = 1024 * 1024
_KEPT: list[bytes] = []


def s3_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    _KEPT.append(b"\x01" * LEAK_BYTES)  # written, so resident (a zeroed block may not be)
    return handlers.s3_handler(event, context)
