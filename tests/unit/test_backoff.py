from __future__ import annotations

import random

from triggerd.domain.backoff import Backoff, backoff_delay


def test_delay_grows_exponentially_within_the_cap() -> None:
    rand = random.Random(7)
    for attempt in range(1, 30):
        delay = backoff_delay(attempt, 1.0, 60.0, rand)
        ceiling = min(60.0, 2 ** (attempt - 1))
        assert 0.5 <= delay <= ceiling


def test_jitter_spreads_retries() -> None:
    rand = random.Random(1)
    delays = {round(backoff_delay(6, 1.0, 60.0, rand), 3) for _ in range(50)}
    assert len(delays) > 40


def test_huge_attempt_numbers_do_not_overflow() -> None:
    assert backoff_delay(10_000, 1.0, 30.0) <= 30.0


def test_stateful_backoff_resets() -> None:
    backoff = Backoff(base=1.0, cap=8.0)
    for _ in range(10):
        assert backoff.next() <= 8.0
    assert backoff.failures == 10
    backoff.reset()
    assert backoff.next() <= 1.0
