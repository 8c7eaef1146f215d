"""From claimed rows to claims, without a database: the downtime rule, dropped rows, and
the job encoded at claim time being exactly the contract's encoding."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson

from triggerd.domain.jobs import Job
from triggerd.domain.models import occurrence_event_id
from triggerd.domain.occurrences import due_at
from triggerd.domain.timeutil import to_iso
from triggerd.domain.tracecontext import parse_traceparent
from triggerd.scheduler.claims import TriggerSpec, plan
from triggerd.store.schedules import ClaimedRow

NOW = datetime(2026, 3, 1, 12, 0, 30, 250_000, tzinfo=UTC)
LEASE = NOW + timedelta(seconds=30)


def spec(
    trigger_id: str, type: str, config: dict[str, object], status: str = "active"
) -> TriggerSpec:
    return TriggerSpec(trigger_id, f"name-{trigger_id}", type, status, 3,
                       orjson.dumps(config).decode())  # fmt: skip


def row(id: int, trigger_id: str, fire_at: datetime, attempts: int = 0, stale: bool = False
        ) -> ClaimedRow:  # fmt: skip
    return ClaimedRow(id, trigger_id, fire_at, fire_at, attempts, stale)


EVERY_SECOND = spec("c", "cron_scheduled", {"cron": "* * * * * *", "timezone": "UTC",
                                           "payload": {"k": [1, 2]}})  # fmt: skip
EVERY_10S = spec("i", "interval_scheduled",
                 {"interval_seconds": 10, "first_run_at": "2026-03-01T11:00:00.000Z"})


def test_on_time_rows_fire_as_claimed() -> None:
    due = NOW + timedelta(seconds=1)
    result = plan([row(1, "c", due)], {"c": EVERY_SECOND}, now=NOW, lease_until=LEASE)
    [claim] = result.claims
    assert (claim.scheduled_for, claim.due, claim.moved, claim.missed) == (due, due, False, ())
    assert claim.event_id == occurrence_event_id("c", due)
    assert result.drop == [] and not result.missed


def test_a_stale_row_fires_only_the_latest_missed_occurrence() -> None:
    old = NOW - timedelta(minutes=5)  # 300 occurrences of an every-second cron ago
    result = plan([row(1, "c", old.replace(microsecond=0), stale=True)], {"c": EVERY_SECOND},
                  now=NOW, lease_until=LEASE)  # fmt: skip
    [claim] = result.claims
    assert claim.scheduled_for == NOW.replace(microsecond=0)  # its own original time
    assert claim.moved
    # missed: the claimed one and those between, each listed
    assert result.missed == {"latest": 300} and len(claim.missed) == 300
    assert claim.missed[0][0].scheduled_for == old.replace(microsecond=0)
    fired = claim.fired(NOW, NOW)
    assert fired.event.scheduled_for == claim.scheduled_for
    assert fired.event.note == "fired after downtime; 300 missed occurrence(s) skipped"
    assert fired.next is not None and fired.next_note is None
    assert fired.next.scheduled_for == claim.scheduled_for + timedelta(seconds=1)  # no burst


def test_a_lone_missed_occurrence_is_flagged_too() -> None:
    """Missed while no scheduler ran, with nothing after it to skip: it fires as itself,
    late, and its event says why."""
    due = datetime(2026, 3, 1, 12, 0, 30, tzinfo=UTC)  # the latest every-10s one due
    [claim] = plan([row(1, "i", due, stale=True)], {"i": EVERY_10S}, now=NOW,
                   lease_until=LEASE).claims  # fmt: skip
    assert (claim.scheduled_for, claim.moved, claim.missed) == (due, False, ())
    assert claim.fired(NOW, NOW).event.note == "fired after downtime"
    [on_time] = plan([row(2, "i", due)], {"i": EVERY_10S}, now=NOW, lease_until=LEASE).claims
    assert on_time.fired(NOW, NOW).event.note is None


def test_attempted_rows_are_never_collapsed() -> None:
    """A row that failed to publish (Kafka down) fires as itself, however late."""
    old = NOW - timedelta(minutes=5)
    result = plan([row(1, "i", old, attempts=4, stale=True)], {"i": EVERY_10S},
                  now=NOW, lease_until=LEASE)  # fmt: skip
    assert [c.scheduled_for for c in result.claims] == [old]
    assert not result.missed


def test_two_missed_rows_of_one_trigger_fire_once() -> None:
    rows = [row(1, "i", NOW - timedelta(seconds=100), stale=True),
            row(2, "i", NOW - timedelta(seconds=90), stale=True)]  # fmt: skip
    result = plan(rows, {"i": EVERY_10S}, now=NOW, lease_until=LEASE)
    [claim] = result.claims
    assert claim.scheduled_for == datetime(2026, 3, 1, 12, 0, 30, tzinfo=UTC)
    assert result.drop == [2]


def test_rows_of_gone_or_inactive_triggers_are_dropped() -> None:
    inactive = spec("x", "cron_scheduled", {"cron": "* * * * *"}, status="inactive")
    rows = [row(1, "x", NOW), row(2, "gone", NOW), row(3, "c", NOW)]
    result = plan(rows, {"x": inactive, "c": EVERY_SECOND}, now=NOW, lease_until=LEASE)
    assert result.drop == [1, 2]
    assert [c.schedule_id for c in result.claims] == [3]


def test_the_job_encoded_at_claim_time_is_the_contract_encoding() -> None:
    [claim] = plan([row(1, "c", NOW)], {"c": EVERY_SECOND}, now=NOW, lease_until=LEASE).claims
    fired_at = NOW + timedelta(milliseconds=3)
    key, value, headers = claim.record(fired_at, (to_iso(fired_at) or "").encode())
    expected = Job(event_id=claim.event_id, trigger_id="c", type="cron_scheduled",
                   source="scheduler", is_test_run=False, payload={"k": [1, 2]},
                   scheduled_for=NOW, fired_at=fired_at,
                   traceparent=claim.traceparent)  # fmt: skip
    assert key == expected.key
    assert value == expected.encode()
    assert headers == expected.headers()
    assert Job.decode(value, headers) == expected
    # Each firing is a trace of its own, and its event row is written under it.
    assert parse_traceparent(claim.traceparent) == claim.traceparent
    assert claim.fired(fired_at, fired_at).event.traceparent == claim.traceparent


def test_skip_fires_nothing_and_resumes_after_now() -> None:
    skip = spec("s", "cron_scheduled", {"cron": "* * * * * *", "timezone": "UTC",
                                         "misfire_policy": "skip"})  # fmt: skip
    old = NOW.replace(microsecond=0) - timedelta(seconds=4)
    result = plan([row(1, "s", old, stale=True)], {"s": skip}, now=NOW, lease_until=LEASE)
    assert result.claims == [] and result.drop == []
    [skipped] = result.skipped
    assert skipped.schedule_id == 1
    assert [due.scheduled_for for due, _ in skipped.missed] == [
        old + timedelta(seconds=n) for n in range(5)]
    assert all("misfire_policy skip" in note for _, note in skipped.missed)
    assert skipped.resume is not None and skipped.resume.scheduled_for == old + timedelta(seconds=5)
    assert result.missed == {"skip": 5}


def test_all_fires_the_window_one_after_the_other() -> None:
    config = {"cron": "* * * * * *", "timezone": "UTC", "misfire_policy": "all",
              "catchup_window_seconds": 3}  # fmt: skip
    catch_all = spec("a", "cron_scheduled", config)
    old = NOW.replace(microsecond=0) - timedelta(seconds=10)
    [claim] = plan([row(1, "a", old, stale=True)], {"a": catch_all}, now=NOW,
                   lease_until=LEASE).claims  # fmt: skip
    # The window reaches back to 12:00:27.250: 12:00:28 fires first; 10 s ago to 12:00:27
    # are missed.
    assert claim.scheduled_for == NOW.replace(microsecond=0) - timedelta(seconds=2)
    assert claim.moved and len(claim.missed) == 8 and claim.catch_up
    fired = claim.fired(NOW, NOW)
    assert fired.next is not None and fired.next_note == "fired after downtime"
    # The successor, inserted marked, fires as itself and passes the mark on while due:
    # 12:00:29, then 12:00:30 (the last one due), then the schedule is on time again.
    fired_times = [claim.scheduled_for]
    for schedule_id in (2, 3):
        assert fired.next is not None and fired.next_note == "fired after downtime"
        chained = ClaimedRow(schedule_id, "a", fired.next.scheduled_for, fired.next.fire_at, 0,
                             False, fired.next_note)  # fmt: skip
        [following] = plan([chained], {"a": catch_all}, now=NOW, lease_until=LEASE).claims
        assert not following.moved and following.note == "fired after downtime"
        fired_times.append(following.scheduled_for)
        fired = following.fired(NOW, NOW)
    assert fired_times == [NOW.replace(microsecond=0) - timedelta(seconds=n) for n in (2, 1, 0)]
    assert fired.next_note is None and fired.next is not None and fired.next.fire_at > NOW


def test_jitter_moves_the_due_time_not_the_event() -> None:
    config = {"cron": "* * * * *", "timezone": "UTC", "jitter_seconds": 30}
    jittered = spec("j", "cron_scheduled", config)
    nominal = datetime(2026, 3, 1, 12, 1, tzinfo=UTC)
    due = due_at("j", config, nominal)
    [claim] = plan([ClaimedRow(1, "j", due.scheduled_for, due.fire_at, 0, False)],
                   {"j": jittered}, now=NOW, lease_until=LEASE).claims  # fmt: skip
    assert claim.due == due.fire_at and claim.scheduled_for == nominal
    assert claim.event_id == occurrence_event_id("j", nominal)
    assert Job.decode(claim.record(NOW, (to_iso(NOW) or "").encode())[1]).scheduled_for == nominal
    fired = claim.fired(NOW, NOW)
    assert fired.next == due_at("j", config, nominal + timedelta(minutes=1))
