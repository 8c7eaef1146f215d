"""The store announces the trigger changes it commits, so that nothing that caches or
schedules from trigger rows in this process can be forgotten by a route: the scheduler
wakes to reload its window, and webhook ingestion drops its cached target. Changes made
by another process reach these on their own clock (the scheduler's reconcile, the
cache's TTL)."""

from __future__ import annotations

from collections.abc import Callable


class TriggerChanges:
    def __init__(self) -> None:
        self._listeners: list[Callable[[str], None]] = []

    def subscribe(self, listener: Callable[[str], None]) -> None:
        self._listeners.append(listener)

    def notify(self, trigger_id: str) -> None:
        """A trigger was created, updated or deleted (its transaction committed)."""
        for listener in self._listeners:
            listener(trigger_id)
