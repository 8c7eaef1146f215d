"""What the composition root builds once and hands to every role and route."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

from triggerd.bus.producer import Bus
from triggerd.config import Settings
from triggerd.metrics import Metrics
from triggerd.store.changes import TriggerChanges
from triggerd.store.db import Database
from triggerd.tracing import Tracer


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


@dataclass
class Services:
    settings: Settings
    db: Database
    bus: Bus
    metrics: Metrics
    wakeup: Wakeup = field(default_factory=Wakeup)
    trigger_changes: TriggerChanges = field(default_factory=TriggerChanges)
    # Span export (OpenTelemetry): records nothing unless configured.
    tracer: Tracer = field(default_factory=Tracer)
    # Filled by the daemon: the supervisor's per-role and per-component state, for /health.
    role_states: Callable[[], dict[str, str]] = dict
    component_states: Callable[[], dict[str, str]] = dict
    # False until the database answered and the schema was checked.
    uses_kafka: bool = True

    def __post_init__(self) -> None:
        # A trigger change in this process may move what is due soon: reload at once.
        self.trigger_changes.subscribe(lambda _trigger_id: self.wakeup.notify())
