"""What the composition root builds once and hands to every role and route."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

from triggerd.bus.producer import Bus
from triggerd.config import Settings
from triggerd.metrics import Metrics
from triggerd.store.db import Database


class Wakeup:
    """Tells the in-process scheduler that schedule rows changed, so it reloads at once
    instead of at its next reconcile."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def notify(self) -> None:
        self._event.set()

    async def wait(self) -> None:
        await self._event.wait()

    def clear(self) -> None:
        self._event.clear()

    def is_set(self) -> bool:
        return self._event.is_set()


class TriggerChanges:
    """Tells in-process caches of trigger rows (webhook ingestion's) that a trigger was
    updated or deleted here, so the next request reads it again: a client that
    deactivates a trigger and posts to it at once gets its 409."""

    def __init__(self) -> None:
        self._listeners: list[Callable[[str], None]] = []

    def subscribe(self, listener: Callable[[str], None]) -> None:
        self._listeners.append(listener)

    def notify(self, trigger_id: str) -> None:
        for listener in self._listeners:
            listener(trigger_id)


@dataclass
class Services:
    settings: Settings
    db: Database
    bus: Bus
    metrics: Metrics
    wakeup: Wakeup = field(default_factory=Wakeup)
    trigger_changes: TriggerChanges = field(default_factory=TriggerChanges)
    # Filled by the daemon: the supervisor's per-role and per-component state, for /health.
    role_states: Callable[[], dict[str, str]] = dict
    component_states: Callable[[], dict[str, str]] = dict
    # False until the database answered and the schema was checked.
    uses_kafka: bool = True
