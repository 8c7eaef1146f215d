"""The audit log's vocabulary: what was done (`Action`), by whom and in which request
(`Origin`), and the `changes` of an entry, secrets masked.

Every change is recorded in the transaction that makes it (store.audit.record), so a
change without its entry, or an entry without its change, cannot be committed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from triggerd.domain.access import ANONYMOUS, SYSTEM
from triggerd.domain.redact import redacted_to_send

Changes = dict[str, list[Any]]  # {field: [old, new]}


class Action(StrEnum):
    TRIGGER_CREATED = "trigger.created"
    TRIGGER_UPDATED = "trigger.updated"
    TRIGGER_DELETED = "trigger.deleted"
    TRIGGER_DISABLED = "trigger.disabled"  # by the daemon itself (actor `system`)
    TRIGGER_TEST_RUN = "trigger.test_run"
    TRIGGER_BACKFILLED = "trigger.backfilled"
    EVENT_REPLAYED = "event.replayed"


@dataclass(frozen=True)
class Origin:
    """Who made a change (an API key's name, `anonymous` or `system`) and the request
    it came with (None for the daemon's own changes)."""

    actor: str
    request_id: str | None = None


SYSTEM_ORIGIN = Origin(SYSTEM)
ANONYMOUS_ORIGIN = Origin(ANONYMOUS)


@dataclass(frozen=True)
class AuditEntry:
    action: Action
    origin: Origin
    at: datetime
    trigger_id: str | None = None
    event_id: str | None = None
    changes: Changes | None = None


def changes(old: Mapping[str, Any] | None, new: Mapping[str, Any] | None) -> Changes:
    """`{field: [old, new]}` for each top-level field and each `config` key that differs
    between two states of a trigger (its API fields: name, type, status, config…; None
    for no trigger, before a create or after a delete). Config keys are named
    `config.<key>`; a missing key and a null one are the same. Secrets and credential
    headers are masked as the API masks them (`***`): a changed secret shows as
    `["***", "***"]`, a secret set for the first time as `[null, "***"]`. Values are
    the inputs' own, not copies: the result is for serializing."""
    before, after = dict(old or {}), dict(new or {})
    old_config = before.pop("config", None) or {}
    new_config = after.pop("config", None) or {}
    diff: Changes = {}
    for name in _union(before, after):
        if before.get(name) != after.get(name):
            diff[name] = [before.get(name), after.get(name)]
    for key in _union(old_config, new_config):
        was, now = old_config.get(key), new_config.get(key)
        if was != now:
            diff[f"config.{key}"] = [_masked(key, was), _masked(key, now)]
    return diff


def _union(first: Mapping[str, Any], second: Mapping[str, Any]) -> list[str]:
    """The keys of both, in the order they were first seen (the API's field order)."""
    return list(dict.fromkeys([*first, *second]))


def _masked(key: str, value: Any) -> Any:
    if value is None:
        return None
    return redacted_to_send({key: value})[key]


__all__ = ["ANONYMOUS_ORIGIN", "SYSTEM_ORIGIN", "Action", "AuditEntry", "Changes", "Origin",
           "changes"]  # fmt: skip
