"""Exponential backoff with full jitter, capped: the one retry policy of the daemon."""

from __future__ import annotations

import random


def backoff_delay(
    attempt: int, base: float, cap: float, rand: random.Random | None = None
) -> float:
    """Delay before retry number `attempt` (1 = first retry): uniform in
    [base/2, min(cap, base * 2**(attempt-1))]. Half the base is kept as a floor so a
    retry is never immediate; above it, full jitter spreads many failing callers out
    (so one retry may come sooner than the one before; the ceiling doubles each time)."""
    if attempt < 1:
        attempt = 1
    ceiling = min(cap, base * (2 ** min(attempt - 1, 62)))
    floor = min(base / 2, ceiling)
    return (rand or random).uniform(floor, ceiling)


class Backoff:
    """Stateful helper for loops that retry until something comes back."""

    def __init__(self, base: float = 0.5, cap: float = 30.0) -> None:
        self.base = base
        self.cap = cap
        self.failures = 0

    def next(self) -> float:
        self.failures += 1
        return backoff_delay(self.failures, self.base, self.cap)

    def reset(self) -> None:
        self.failures = 0
