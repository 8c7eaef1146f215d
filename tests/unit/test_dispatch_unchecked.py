"""The dispatcher's index of claims still to be checked against the database before they
are due (an API cancel must stop them): earliest first, nothing checked, published or
forgotten, and nothing lost when a check fails."""

from __future__ import annotations

import gc
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

from triggerd.scheduler.claims import Claim, TriggerSpec
from triggerd.scheduler.dispatch import Dispatcher

T0 = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
SPEC = TriggerSpec("7b0f5a4e-1c1e-4a55-9a51-1d6c6b8a0e01", "t", "cron", "active", 1, "{}")


def claim(schedule_id: int, due_in: float, *, checked: bool = False) -> Claim:
    due = T0 + timedelta(seconds=due_in)
    return Claim.of(SPEC, schedule_id=schedule_id, scheduled_for=due, due=due, attempt_count=0,
                    lease_until=due + timedelta(seconds=30), checked=checked)  # fmt: skip


def dispatcher() -> Dispatcher:
    services: Any = SimpleNamespace(settings=SimpleNamespace(instance_id="me"))
    return Dispatcher(services, window=None, lease_margin=timedelta(seconds=5))  # type: ignore[arg-type]


def ids(claims: list[Claim]) -> list[int]:
    return [c.schedule_id for c in claims]


def test_unchecked_claims_come_earliest_first_up_to_the_bound() -> None:
    d = dispatcher()
    d.add([claim(3, 3.0), claim(1, 1.0), claim(2, 2.0, checked=True), claim(4, 0.5)])
    assert d.next_unchecked() == T0 + timedelta(seconds=0.5)
    assert ids(d.unchecked(T0 + timedelta(seconds=1))) == [4, 1]
    assert ids(d.unchecked(T0 + timedelta(seconds=10))) == [4, 1, 3]
    assert d.unchecked(T0) == []


def test_a_failed_check_leaves_them_unchecked_and_a_good_one_removes_them() -> None:
    d = dispatcher()
    d.add([claim(1, 1.0), claim(2, 2.0), claim(3, 3.0)])
    soon = d.unchecked(T0 + timedelta(seconds=2))
    assert ids(soon) == [1, 2]
    assert ids(d.unchecked(T0 + timedelta(seconds=2))) == [1, 2]  # the check never ran
    d.renewed(soon, owned={1})  # 2 was cancelled through the API: forgotten, never sent
    assert ids(d.unchecked(T0 + timedelta(seconds=10))) == [3]
    assert d.next_unchecked() == T0 + timedelta(seconds=3)
    assert d.held == 2


def test_a_claim_added_again_is_listed_once_at_its_new_time() -> None:
    d = dispatcher()
    d.add([claim(1, 1.0)])
    d.add([claim(1, 1.0), claim(5, 4.0)])
    assert ids(d.unchecked(T0 + timedelta(seconds=5))) == [1, 5]
    d.add([claim(5, 2.0)])  # re-claimed with another due time: the old entry is stale
    assert ids(d.unchecked(T0 + timedelta(seconds=5))) == [1, 5]
    assert d.next_unchecked() == T0 + timedelta(seconds=1)
    d.renewed(d.unchecked(T0 + timedelta(seconds=5)), owned={1, 5})
    assert d.next_unchecked() is None and d.unchecked(T0 + timedelta(days=1)) == []


def test_a_claim_is_one_object_for_the_garbage_collector() -> None:
    """Thousands are held at once: none may carry containers (a config dict, a spec
    object) that every full collection would walk as well."""
    spec = TriggerSpec(SPEC.id, "t", "cron_scheduled", "active", 1,
                       '{"cron": "* * * * * *", "payload": {"deep": {"er": [1, 2]}}}')  # fmt: skip
    held = Claim.of(spec, schedule_id=1, scheduled_for=T0, due=T0, attempt_count=0,
                    lease_until=T0 + timedelta(seconds=30))  # fmt: skip
    gc.collect()  # untracks the encoded-job tuple, as a collection would
    referents = [r for r in gc.get_referents(held) if gc.is_tracked(r) and r is not Claim]
    assert referents == []
    key, value, headers = held.record(T0, b"2026-11-22T12:00:00.000Z")
    assert b'"payload":{"deep":{"er":[1,2]}}' in value and key == SPEC.id.encode()
    assert headers == [("traceparent", held.traceparent.encode())]
    fired = held.fired(T0, T0)
    assert fired.event.payload == {"deep": {"er": [1, 2]}}
    assert fired.next is not None and fired.next.fire_at == T0 + timedelta(seconds=1)
