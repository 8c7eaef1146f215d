"""The circuit breaker's transitions (domain/circuit.py) and the rate limiter's rules
(worker/ratelimit.py), with injected clocks."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from triggerd.domain.circuit import (
    MAX_COOLDOWN,
    Health,
    endpoint_key,
    endpoint_url,
    on_failure,
    on_probe,
    on_success,
    released,
)
from triggerd.domain.enums import CircuitState
from triggerd.worker.ratelimit import RateLimiter

T0 = datetime(2030, 1, 1, tzinfo=UTC)


def fail(health: Health, at: datetime, threshold: int = 3, cooldown: float = 30.0) -> Health:
    return on_failure(health, at, threshold=threshold, cooldown=cooldown)


def test_endpoint_is_the_url_without_query_or_fragment() -> None:
    assert endpoint_url("https://a.example/hook?x=1#f") == "https://a.example/hook"
    assert endpoint_key("https://a.example/hook?x=1") == endpoint_key("https://a.example/hook")
    assert endpoint_key("https://a.example/hook") != endpoint_key("https://a.example/other")


def test_opens_at_the_threshold_and_counts_from_the_first_failure() -> None:
    health = Health()
    for n in range(1, 3):
        health = fail(health, T0 + timedelta(seconds=n))
        assert health.state is CircuitState.CLOSED and health.consecutive_failures == n
    assert health.failing_since == T0 + timedelta(seconds=1)
    opened = fail(health, T0 + timedelta(seconds=3))
    assert opened.state is CircuitState.OPEN
    assert opened.opened_at == T0 + timedelta(seconds=3)
    assert opened.next_probe_at == T0 + timedelta(seconds=33)
    assert opened.cooldown == 30.0


def test_a_failed_probe_doubles_the_cooldown_up_to_ten_minutes() -> None:
    health = fail(fail(fail(Health(), T0), T0), T0)
    pauses = []
    at = T0
    for _ in range(8):
        at = health.next_probe_at or at
        assert health.probe_due(at)
        health = on_probe(health, at + timedelta(seconds=15))
        assert health.state is CircuitState.HALF_OPEN and not health.probe_due(at)
        health = fail(health, at)
        pauses.append(health.cooldown)
        assert health.state is CircuitState.OPEN
        assert health.next_probe_at == at + timedelta(seconds=health.cooldown)
    assert pauses == [60, 120, 240, 480, 600, 600, 600, 600]
    assert health.opened_at == T0  # open since the first time
    assert MAX_COOLDOWN == 600


def test_any_success_closes_and_resets() -> None:
    health = on_probe(fail(fail(fail(Health(), T0), T0), T0), T0 + timedelta(seconds=40))
    closed = on_success(health, T0 + timedelta(seconds=31))
    assert closed.state is CircuitState.CLOSED and closed.clean
    assert closed.last_success_at == T0 + timedelta(seconds=31)
    assert closed.last_failure_at == T0 and closed.failing_since is None
    assert closed.opened_at is None and closed.next_probe_at is None
    # in the middle of a failure streak too
    assert on_success(fail(Health(), T0), T0).consecutive_failures == 0


def test_a_failure_while_open_counts_but_changes_nothing_else() -> None:
    opened = fail(fail(fail(Health(), T0), T0), T0)
    later = fail(opened, T0 + timedelta(seconds=1))
    assert later.state is CircuitState.OPEN and later.consecutive_failures == 4
    assert later.next_probe_at == opened.next_probe_at


def test_a_released_probe_lets_the_next_delivery_probe() -> None:
    health = on_probe(fail(fail(fail(Health(), T0), T0), T0), T0 + timedelta(seconds=60))
    assert not health.probe_due(T0 + timedelta(seconds=31))
    assert released(health).probe_due(T0 + timedelta(seconds=31))


# --- rate limits ---------------------------------------------------------------------


def test_a_burst_gets_evenly_spaced_slots_in_arrival_order() -> None:
    limiter = RateLimiter()
    waits = [limiter.admit("t", 4.0, f"e{i}", now=100.0) for i in range(5)]
    assert waits[0] is None  # the first goes at once
    assert waits[1:] == [0.25, 0.5, 0.75, 1.0]
    # Each comes back at (or after) its slot and goes; a newcomer queues behind them.
    assert limiter.admit("t", 4.0, "e1", now=100.27) is None
    late = limiter.admit("t", 4.0, "late", now=100.3)
    assert late is not None and abs(late - 0.95) < 1e-9  # the slot after e4's
    assert limiter.admit("t", 4.0, "e2", now=100.5) is None


def test_a_duplicate_that_comes_back_early_keeps_waiting_for_its_slot() -> None:
    limiter = RateLimiter()
    assert limiter.admit("t", 2.0, "a", now=0.0) is None
    assert limiter.admit("t", 2.0, "b", now=0.0) == 0.5
    assert limiter.admit("t", 2.0, "b", now=0.1) == 0.4
    assert limiter.admit("t", 2.0, "b", now=0.5) is None


def test_pace_spaces_the_actual_starts() -> None:
    limiter = RateLimiter()
    assert limiter.pace("t", 4.0, now=10.0) == 0.0
    # the next one got through a little early (its way back was quicker): it sleeps
    assert abs(limiter.pace("t", 4.0, now=10.2) - 0.055) < 1e-9  # 0.25 + 5 ms margin
    assert limiter.pace("t", 4.0, now=11.0) == 0.0


def test_triggers_do_not_share_a_lane() -> None:
    limiter = RateLimiter()
    assert limiter.admit("a", 1.0, "a1", now=0.0) is None
    assert limiter.admit("a", 1.0, "a2", now=0.0) == 1.0
    assert limiter.admit("b", 1.0, "b1", now=0.0) is None


def test_slots_nobody_claimed_are_forgotten() -> None:
    limiter = RateLimiter()
    limiter.admit("t", 1.0, "a", now=0.0)
    limiter.admit("t", 1.0, "b", now=0.0)  # slot 1.0, never comes back (another owner)
    assert limiter.waiting("t") == 1
    assert limiter.admit("t", 1.0, "c", now=1000.0) is None
    assert limiter.waiting("t") == 0


def test_a_tiny_rate_waits_a_representable_time() -> None:
    # any rate > 0 is valid: the first delivery goes (no endless sleep), later ones are
    # put off for a time a timedelta and a DATETIME can hold
    limiter = RateLimiter()
    assert limiter.admit("t", 1e-300, "a", now=0.0) is None
    assert limiter.pace("t", 1e-300, now=0.0) == 0.0
    for name in ("b", "c", "d"):
        wait = limiter.admit("t", 1e-300, name, now=0.0)
        assert wait is not None and 0 < wait <= RateLimiter.MAX_SECONDS
        assert (T0 + timedelta(seconds=wait)).year < 9999
    assert limiter.admit("t", 1e-300, "c", now=5.0) == RateLimiter.MAX_SECONDS
