"""Per-trigger delivery rate limits (`config.rate_limit_per_second`): starts at most
`rate` per second, evenly spaced `1/rate` apart. In memory, per process: the jobs of one
trigger share a Kafka partition, which one worker owns at a time.

Nothing waits in memory for long. A delivery that cannot start within SHORT is given
a slot (the next free one after those already given) and put off through the outbox
until then (the gate writes "owed at <slot>"); when its job comes back it finds its
slot and goes, ahead of newer arrivals. Deliveries of other triggers never wait behind
it, and a worker that dies loses nothing: the waiting deliveries are rows in the
database. Right before each request `pace` enforces the spacing on the actual starts
(a delivery's way back through Kafka takes a little longer for some than for others),
by a sleep of at most about SHORT.

The clock is injected (monotonic seconds) so the rules are unit-tested without waiting.
"""

from __future__ import annotations

from dataclasses import dataclass, field

NEVER = -1e18


@dataclass
class _Lane:
    interval: float
    next_free: float = NEVER  # the earliest start for a delivery that has no slot
    tail: float = NEVER  # the last slot given
    last_start: float = NEVER  # the last actual start (pace)
    slots: dict[str, float] = field(default_factory=dict)  # event id -> slot, in slot order


class RateLimiter:
    SHORT = 0.1  # a wait this short is slept, not put off through the outbox
    STALE = 60.0  # a slot unclaimed this long after its time is forgotten
    # Actual starts are spaced a little wider than 1/rate (2%, at most 5 ms), so that
    # they are still 1/rate apart where they arrive, after a network hop's jitter.
    MARGIN, MAX_MARGIN = 0.02, 0.005
    MAX_LANES = 100_000
    # The spacing of a tiny rate (`rate_limit_per_second` may be any number > 0) and a
    # wait are capped so that they stay representable: a timedelta, a DATETIME, a sleep
    # that ends. A delivery put off this long comes back and is put off again.
    MAX_SECONDS = 1e9  # ~31 years

    def __init__(self) -> None:
        self._lanes: dict[str, _Lane] = {}

    def admit(self, key: str, rate: float, event_id: str, now: float) -> float | None:
        """None: the delivery may start now (call `pace` right before it does). Else the
        seconds it must wait: put it off that long; it holds its slot meanwhile."""
        lane = self._lane(key, rate, now)
        slot = lane.slots.get(event_id)
        if slot is not None:
            if slot - now > self.SHORT:
                return min(slot - now, self.MAX_SECONDS)  # back early: its slot still waits
            del lane.slots[event_id]
            lane.next_free = max(lane.next_free, max(now, slot) + lane.interval)
            return None
        if not lane.slots and lane.next_free - now <= self.SHORT:
            lane.next_free = max(now, lane.next_free) + lane.interval
            return None
        slot = max(now, lane.next_free, lane.tail + lane.interval)
        lane.tail = slot
        lane.slots[event_id] = slot
        return min(slot - now, self.MAX_SECONDS)

    def pace(self, key: str, rate: float, now: float) -> float:
        """Seconds to sleep before starting the delivery `admit` let through; records
        the start."""
        lane = self._lane(key, rate, now)
        spacing = lane.interval + min(lane.interval * self.MARGIN, self.MAX_MARGIN)
        start = max(now, lane.last_start + spacing)
        lane.last_start = start
        return start - now

    def waiting(self, key: str) -> int:
        lane = self._lanes.get(key)
        return len(lane.slots) if lane else 0

    def _lane(self, key: str, rate: float, now: float) -> _Lane:
        interval = min(1.0 / rate, self.MAX_SECONDS)
        lane = self._lanes.get(key)
        if lane is None:
            if len(self._lanes) >= self.MAX_LANES:
                self._forget_idle(now)
            lane = self._lanes[key] = _Lane(interval)
        elif lane.interval != interval:
            lane.interval = interval  # the trigger's rate changed
        # Slots are given in increasing order: the stale ones are at the front.
        while lane.slots:
            event_id, slot = next(iter(lane.slots.items()))
            if slot >= now - self.STALE:
                break
            del lane.slots[event_id]
        return lane

    def _forget_idle(self, now: float) -> None:
        for key in [k for k, lane in self._lanes.items()
                    if not lane.slots and lane.last_start < now - self.STALE]:  # fmt: skip
            del self._lanes[key]
        if len(self._lanes) >= self.MAX_LANES:
            self._lanes.clear()
