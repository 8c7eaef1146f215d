"""The worker's batched queries: the event loads, attempt claims and outcome writes of
many jobs share one statement (or transaction), each caller gets its own answer, and a
batch writes exactly what the one-job-at-a-time queries would."""

from __future__ import annotations

import asyncio
import dataclasses
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest

from tests.integration.worker_harness import (
    attempts_of,
    event_row,
    insert_event,
    insert_events_of,
    insert_trigger,
    job_for,
)
from triggerd.domain.models import new_id
from triggerd.domain.timeutil import utcnow
from triggerd.store.db import Database
from triggerd.store.deliveries import (
    AttemptClaims,
    EventLoader,
    Outcome,
    OutcomeWriter,
    _outcome_script,
    load_event,
    record_outcome,
    start_attempt,
)


async def test_concurrent_loads_share_one_query(db: Database, monkeypatch: Any) -> None:
    config = {"endpoint": "http://127.0.0.1:9/x"}
    trigger_id = await insert_trigger(db, config)
    jobs = [job_for(trigger_id, payload={"i": i}) for i in range(7)]
    for job in jobs:
        await insert_event(db, job, config)
    queries: list[str] = []
    fetchall = db.fetchall

    async def counting(sql: str, params: Any = None) -> Any:
        queries.append(sql)
        return await fetchall(sql, params)

    monkeypatch.setattr(db, "fetchall", counting)
    loader = EventLoader(db)
    missing = new_id()
    ids = [j.event_id for j in jobs] + [missing, jobs[0].event_id, jobs[0].event_id.upper()]
    loaded = await asyncio.gather(*[loader.load(i) for i in ids])
    assert len(queries) == 1
    for event_id, event in zip(ids, loaded, strict=True):
        if event_id == missing:
            assert event is None
        else:
            assert event is not None and event.id == event_id.lower()
            assert event == await load_event(db, event_id)
    # a later turn is a new query
    assert (await loader.load(jobs[3].event_id)) is not None
    assert len(queries) == 2


async def test_a_failed_query_fails_every_caller(db: Database, monkeypatch: Any) -> None:
    async def broken(sql: str, params: Any = None) -> Any:
        raise ConnectionResetError("gone")

    monkeypatch.setattr(db, "fetchall", broken)
    loader = EventLoader(db)
    results = await asyncio.gather(loader.load(new_id()), loader.load(new_id()),
                                   return_exceptions=True)  # fmt: skip
    assert [type(r) for r in results] == [ConnectionResetError, ConnectionResetError]


async def test_a_cancelled_caller_does_not_disturb_the_others(db: Database) -> None:
    config: dict[str, Any] = {}
    trigger_id = await insert_trigger(db, config)
    job = job_for(trigger_id)
    await insert_event(db, job, config)
    loader = EventLoader(db)
    first = asyncio.ensure_future(loader.load(job.event_id))
    second = asyncio.ensure_future(loader.load(job.event_id))
    await asyncio.sleep(0)
    first.cancel()
    event = await second
    assert event is not None and event.id == job.event_id
    with pytest.raises(asyncio.CancelledError):
        await first


# -- attempt claims ---------------------------------------------------------------------


async def _events(db: Database, count: int) -> list[str]:
    config = {"endpoint": "http://127.0.0.1:9/x"}
    trigger_id = await insert_trigger(db, config)
    jobs = [job_for(trigger_id, payload={"i": i}) for i in range(count)]
    await insert_events_of(db, jobs, config)
    return [job.event_id for job in jobs]


def _counting(db: Database, monkeypatch: Any, name: str) -> list[str]:
    calls: list[str] = []
    original = getattr(db, name)

    async def counting(sql: str, *params: Any) -> Any:
        calls.append(sql)
        return await original(sql, *params)

    monkeypatch.setattr(db, name, counting)
    return calls


async def test_claims_of_one_turn_share_one_insert(db: Database, monkeypatch: Any) -> None:
    ids = await _events(db, 6)
    inserts = _counting(db, monkeypatch, "execute")
    claims = AttemptClaims(db)
    assert await asyncio.gather(*[claims.claim(i, 1) for i in ids]) == [True] * 6
    assert len(inserts) == 1
    for event_id in ids:
        [row] = await attempts_of(db, event_id)
        assert row["attempt"] == 1 and row["finished_at"] is None


async def test_a_claim_never_takes_an_existing_row(db: Database) -> None:
    ids = await _events(db, 4)
    now = utcnow()
    # someone else's unfinished attempt, and a finished one
    assert await start_attempt(db, ids[0], 1, now, now) == "new"
    assert await start_attempt(db, ids[1], 1, now, now) == "new"
    await record_outcome(db, _outcome(ids[1], "success"))
    before = [await attempts_of(db, i) for i in ids[:2]]
    claims = AttemptClaims(db)
    keys = [(ids[0], 1), (ids[1], 1), (ids[2], 1), (ids[3], 1), (ids[3], 2)]
    got = await asyncio.gather(*[claims.claim(i, a) for i, a in keys])
    assert got == [False, False, True, True, True]
    assert [await attempts_of(db, i) for i in ids[:2]] == before  # untouched
    assert [r["attempt"] for r in await attempts_of(db, ids[3])] == [1, 2]


async def test_one_key_twice_in_a_batch_is_claimed_once(db: Database) -> None:
    [event_id] = await _events(db, 1)
    claims = AttemptClaims(db)
    got = await asyncio.gather(claims.claim(event_id, 1), claims.claim(event_id.upper(), 1))
    assert got == [True, False]
    assert len(await attempts_of(db, event_id)) == 1


async def test_claims_racing_across_batches_are_disjoint(db: Database) -> None:
    """Two workers claiming the same attempts at once: each row is claimed exactly once."""
    ids = await _events(db, 30)
    first, second = AttemptClaims(db), AttemptClaims(db)
    got = await asyncio.gather(*[c.claim(i, 1) for i in ids for c in (first, second)])
    pairs = list(zip(got[0::2], got[1::2], strict=True))
    assert all(a != b for a, b in pairs), pairs


# -- outcomes ---------------------------------------------------------------------------


def _outcome(event_id: str, status: str, attempt: int = 1) -> Outcome:
    now = utcnow()
    return Outcome(
        event_id=event_id, attempt=attempt, status=status, finished_at=now,
        response_status={"success": 200, "failed": 400, "retrying": 503}[status],
        latency_ms=7, error=None if status == "success" else f"HTTP {status}",
        retry_at=now + timedelta(seconds=30) if status == "retrying" else None,
    )  # fmt: skip


_STATE = ("execution_status", "attempts", "response_status", "error_message", "delivered_at",
          "publish_at", "publish_attempt")  # fmt: skip
_ATTEMPT = ("attempt", "started_at", "finished_at", "response_status", "latency_ms", "error")


async def _state(db: Database, event_id: str) -> tuple[Any, ...]:
    row = await event_row(db, event_id)
    attempts = await attempts_of(db, event_id)
    return (tuple(row[c] for c in _STATE),
            [tuple(a[c] for c in _ATTEMPT if c != "started_at") for a in attempts])  # fmt: skip


async def test_a_batch_of_outcomes_writes_what_single_writes_do(
    db: Database, monkeypatch: Any
) -> None:
    statuses = ["success", "failed", "retrying", "success", "retrying"]
    batched, single = await _events(db, len(statuses)), await _events(db, len(statuses))
    claims = AttemptClaims(db)
    assert all(await asyncio.gather(*[claims.claim(i, 1) for i in batched + single]))
    now = utcnow()  # one finish time for all, so the rows can be compared

    def at_now(event_id: str, status: str) -> Outcome:
        retry_at = now + timedelta(seconds=30) if status == "retrying" else None
        return replace(_outcome(event_id, status), finished_at=now, retry_at=retry_at)

    outcomes = [at_now(i, s) for i, s in zip(batched, statuses, strict=True)]
    for event_id, status in zip(single, statuses, strict=True):
        assert await record_outcome(db, at_now(event_id, status))
    scripts = _counting(db, monkeypatch, "script")
    reads = _counting(db, monkeypatch, "fetchall")
    writer = OutcomeWriter(db)
    assert await asyncio.gather(*[writer.record(o) for o in outcomes]) == [True] * len(outcomes)
    assert len(scripts) == 1 and reads == []  # one round trip, all known to be ours
    for mine, theirs in zip(batched, single, strict=True):
        assert await _state(db, mine) == await _state(db, theirs)
    retrying = await event_row(db, batched[2])
    assert retrying["publish_attempt"] == 2 and retrying["publish_at"] is not None


async def test_an_outcome_someone_else_finished_is_refused_alone(db: Database) -> None:
    ids = await _events(db, 3)
    claims = AttemptClaims(db)
    assert all(await asyncio.gather(*[claims.claim(i, 1) for i in ids]))
    assert await record_outcome(db, _outcome(ids[1], "failed"))  # finished elsewhere
    before = await _state(db, ids[1])
    writer = OutcomeWriter(db)
    got = await asyncio.gather(*[writer.record(_outcome(i, "success")) for i in ids])
    assert got == [True, False, True]
    assert await _state(db, ids[1]) == before
    for event_id in (ids[0], ids[2]):
        assert (await event_row(db, event_id))["execution_status"] == "success"


async def test_a_late_outcome_does_not_move_an_event_back(db: Database) -> None:
    """The event already owes attempt 3 (a replay): finishing attempt 1 now records the
    attempt but leaves the event alone, as record_outcome does."""
    ids = await _events(db, 2)
    claims = AttemptClaims(db)
    assert all(await asyncio.gather(*[claims.claim(i, 1) for i in ids]))
    await db.execute("UPDATE event_logs SET publish_attempt = 3 WHERE id = %s", [ids[0]])
    before = await event_row(db, ids[0])
    writer = OutcomeWriter(db)
    assert await asyncio.gather(*[writer.record(_outcome(i, "success")) for i in ids]) == [
        True, True]  # fmt: skip
    assert await event_row(db, ids[0]) == before
    [attempt] = await attempts_of(db, ids[0])
    assert attempt["finished_at"] is not None and attempt["response_status"] == 200


async def test_what_a_target_answered_is_stored_as_it_was(db: Database) -> None:
    """The batched statements are rendered by us (store/literals.py): an error with
    quotes, backslashes, percent signs, braces and non-ASCII text is stored unchanged,
    and so is every other value, next to one written alone."""
    ids = await _events(db, 4)
    claims = AttemptClaims(db)
    assert all(await asyncio.gather(*[claims.claim(i, 1) for i in ids]))
    odd = "HTTP 500 Oops: it's 100% {broken} \\ \"quoted\" %s %(x)s; DROP TABLE x; -- ünï ✓"
    outcomes = [dataclasses.replace(_outcome(i, "retrying"), error=odd, latency_ms=None)
                for i in ids[:3]]  # fmt: skip
    writer = OutcomeWriter(db)
    assert await asyncio.gather(*[writer.record(o) for o in outcomes]) == [True] * 3
    assert await record_outcome(db, dataclasses.replace(outcomes[0], event_id=ids[3]))
    for event_id in ids:
        row = await event_row(db, event_id)
        [attempt] = await attempts_of(db, event_id)
        assert row["error_message"] == odd and attempt["error"] == odd
        assert attempt["latency_ms"] is None and attempt["response_status"] == 503
        assert row["publish_at"] is not None and row["publish_attempt"] == 2
    assert await _state(db, ids[0]) == await _state(db, ids[3])


async def test_the_batched_updates_use_the_primary_keys(db: Database) -> None:
    # enough rows that a scan would cost more than the lookups (on a near-empty table
    # the optimizer rightly prefers the scan)
    ids = await _events(db, 1000)
    await AttemptClaims(db)._claim([(i, 1) for i in ids])
    await db.execute("ANALYZE TABLE event_logs, delivery_attempts")
    outcomes = [_outcome(i, s) for i, s in zip(ids[:3], ("success", "retrying", "failed"),
                                                strict=True)]  # fmt: skip
    script = _outcome_script(outcomes, 12345).split(";\n")
    assert script[0] == "BEGIN" and script[-1] == "COMMIT" and len(script) == 4
    for statement, table in zip(script[1:3], ("delivery_attempts", "event_logs"), strict=True):
        plan = await db.fetchall(f"EXPLAIN {statement}")
        [row] = [r for r in plan if r["table"] == table]
        assert row["key"] == "PRIMARY" and row["type"] == "range", plan
        if table == "event_logs":  # whose attempt this batch finished: by its key
            [sub] = [r for r in plan if r["table"] == "d"]
            assert sub["key"] == "PRIMARY" and sub["type"] in ("eq_ref", "ref"), plan


async def test_an_event_twice_in_a_batch_is_written_in_order(db: Database) -> None:
    """Two attempts of one event in one batch (a replay's attempt beside a late one):
    each attempt row is finished, and the event moves as the attempts come."""
    [event_id] = await _events(db, 1)
    claims = AttemptClaims(db)
    assert await claims.claim(event_id, 1) and await claims.claim(event_id, 2)
    first = _outcome(event_id, "retrying")
    second = dataclasses.replace(_outcome(event_id, "success"), attempt=2)
    assert "BEGIN" in _outcome_script([first, second], 1)
    writer = OutcomeWriter(db)
    assert await asyncio.gather(writer.record(first), writer.record(second)) == [True, True]
    row = await event_row(db, event_id)
    assert row["execution_status"] == "success" and row["attempts"] == 2
    assert [a["finished_at"] is not None for a in await attempts_of(db, event_id)] == [True, True]
