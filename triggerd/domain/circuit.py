"""An endpoint's circuit breaker, as pure transitions (the store keeps the state in the
database, shared by every worker process; worker/circuit.py applies it).

An **endpoint** is a trigger's endpoint URL without its query string (and fragment).

    closed ──(threshold consecutive retryable failures)──► open
    open ──(cool-down over; one delivery claims the probe)──► half_open
    half_open ──(probe succeeds)──► closed        (waiting deliveries follow)
    half_open ──(probe fails)──► open, cool-down doubled (at most MAX_COOLDOWN)

Retryable failures are 408, 429, 5xx, timeouts and connection errors. Any success
resets the failure count; other answers (other 4xx, a refused destination) neither
count nor reset it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from triggerd.domain.enums import CircuitState

MAX_COOLDOWN = 600.0  # seconds


# The list shows open circuits first.
STATE_ORDER = (CircuitState.OPEN, CircuitState.HALF_OPEN, CircuitState.CLOSED)


def endpoint_url(url: str) -> str:
    """The endpoint a delivery URL belongs to: the URL without query string or fragment
    (the cut behind triggers.endpoint_hash)."""
    return url.split("#", 1)[0].split("?", 1)[0]


def endpoint_key(url: str) -> str:
    """SHA-256 (hex) of the endpoint URL: its key in the database."""
    return hashlib.sha256(endpoint_url(url).encode()).hexdigest()


@dataclass(frozen=True)
class Health:
    state: CircuitState = CircuitState.CLOSED
    consecutive_failures: int = 0
    failing_since: datetime | None = None
    last_success_at: datetime | None = None
    last_failure_at: datetime | None = None
    opened_at: datetime | None = None
    next_probe_at: datetime | None = None
    cooldown: float = 0.0  # seconds; the last cool-down (0 while closed)
    probe_until: datetime | None = None

    @property
    def clean(self) -> bool:
        """Closed with nothing to reset: a success needs no write."""
        return (self.state is CircuitState.CLOSED and self.consecutive_failures == 0
                and self.failing_since is None)  # fmt: skip

    def probe_due(self, now: datetime) -> bool:
        """Whether a delivery may try to claim the probe now."""
        if self.state is CircuitState.OPEN:
            return self.next_probe_at is None or self.next_probe_at <= now
        if self.state is CircuitState.HALF_OPEN:
            return self.probe_until is None or self.probe_until <= now
        return False


def on_failure(health: Health, now: datetime, *, threshold: int,
               cooldown: float) -> Health:  # fmt: skip
    """A retryable failure. Opens a closed circuit at the threshold; re-opens a half-open
    one with the cool-down doubled (a failed probe)."""
    failed = replace(
        health,
        consecutive_failures=health.consecutive_failures + 1,
        failing_since=health.failing_since or now,
        last_failure_at=now,
    )
    if health.state is CircuitState.HALF_OPEN:
        pause = min(max(health.cooldown, cooldown) * 2, MAX_COOLDOWN)
        return replace(failed, state=CircuitState.OPEN, cooldown=pause, probe_until=None,
                       next_probe_at=now + timedelta(seconds=pause))  # fmt: skip
    if health.state is CircuitState.CLOSED and failed.consecutive_failures >= threshold:
        pause = min(cooldown, MAX_COOLDOWN)
        return replace(failed, state=CircuitState.OPEN, cooldown=pause, opened_at=now,
                       next_probe_at=now + timedelta(seconds=pause))  # fmt: skip
    return failed  # open: an attempt that started before it opened


def on_refusal(health: Health, now: datetime) -> Health:
    """A failure the circuit does not count (another 4xx, a refused destination): the
    count stays as it is, but the endpoint is failing all the same (auto-disable)."""
    return replace(health, failing_since=health.failing_since or now, last_failure_at=now)


def on_success(health: Health, now: datetime) -> Health:
    """Any success closes the circuit and resets the count."""
    return Health(state=CircuitState.CLOSED, last_success_at=now,
                  last_failure_at=health.last_failure_at)  # fmt: skip


def on_probe(health: Health, until: datetime) -> Health:
    """This delivery is the probe, leased until `until` (then another may probe)."""
    return replace(health, state=CircuitState.HALF_OPEN, probe_until=until)


def released(health: Health) -> Health:
    """The probe ended without a verdict on the endpoint (another 4xx, a refused
    destination, a duplicate job): the next delivery may probe at once."""
    if health.state is not CircuitState.HALF_OPEN:
        return health
    return replace(health, probe_until=None)
