"""The store announces every committed trigger change, so no route can forget to wake
the scheduler or to drop webhook ingestion's cached target."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from triggerd.domain.audit import SYSTEM_ORIGIN
from triggerd.domain.contract import validate_create
from triggerd.domain.models import new_id
from triggerd.store.changes import TriggerChanges
from triggerd.store.db import Database
from triggerd.store.triggers import TriggerStore

BODY = {"name": "t", "type": "cron_scheduled",
        "config": {"cron": "*/5 * * * *", "endpoint": "https://example.com/hook"}}  # fmt: skip


async def test_create_update_and_delete_are_announced_once_each(db: Database) -> None:
    changes = TriggerChanges()
    seen: list[str] = []
    changes.subscribe(seen.append)
    store = TriggerStore(db, changes)
    now = datetime.now(UTC)
    trigger_id = new_id()
    await store.create(validate_create(BODY, now=now), trigger_id, now, SYSTEM_ORIGIN)
    assert seen == [trigger_id]

    await store.update(trigger_id, lambda current: current, now, SYSTEM_ORIGIN)
    assert seen == [trigger_id] * 2

    assert await store.delete(trigger_id, now, SYSTEM_ORIGIN)
    assert seen == [trigger_id] * 3

    # Nothing changed, nothing announced: an unknown id.
    assert await store.update(new_id(), lambda current: current, now, SYSTEM_ORIGIN) is None
    assert not await store.delete(new_id(), now, SYSTEM_ORIGIN)
    assert seen == [trigger_id] * 3


async def test_a_failed_change_is_not_announced(db: Database) -> None:
    changes = TriggerChanges()
    seen: list[str] = []
    changes.subscribe(seen.append)
    store = TriggerStore(db, changes)
    now = datetime.now(UTC)
    trigger_id = new_id()
    await store.create(validate_create(BODY, now=now), trigger_id, now, SYSTEM_ORIGIN)

    def refuse(current: object) -> object:
        raise ValueError("validation failed")

    with pytest.raises(ValueError):
        await store.update(trigger_id, refuse, now, SYSTEM_ORIGIN)  # type: ignore[arg-type]
    assert seen == [trigger_id]
