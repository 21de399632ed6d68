"""Backoff for the daemon's own loops (the invoker uses tenacity's equivalent wait)."""

from __future__ import annotations

import random
from collections.abc import Callable


def compute_backoff(attempt: int, *, initial_s: float = 1.0, cap_s: float = 30.0,
                    rng: Callable[[], float] = random.random) -> float:
    """Full-jitter exponential backoff: uniform(0, min(cap, initial * 2**(attempt-1))).

    *attempt* counts from 1. Pure apart from *rng*, which tests replace.
    """
    if attempt < 1:
        raise ValueError("attempt counts from 1")
    ceiling = min(cap_s, initial_s * 2 ** min(attempt - 1, 62))
    return rng() * ceiling
