"""Rows mapped to frozen dataclasses at the store boundary."""

from __future__ import annotations

import os
import re
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson

from triggerd.domain.contract.configs import TriggerConfig, stored_config
from triggerd.domain.enums import SCHEDULED_TYPES as _SCHEDULED
from triggerd.domain.timeutil import from_db, to_iso

SCHEDULED_TYPES = tuple(t.value for t in _SCHEDULED)

# Event IDs of scheduled occurrences are derived from the occurrence, so a re-claimed
# occurrence can never produce a second event.
_OCCURRENCE_NS = uuid.UUID("6f1c1b0e-5f8e-4d7e-9a51-4a1f1f0b7c3d")


def occurrence_event_id(trigger_id: str, fire_at: datetime) -> str:
    return str(uuid.uuid5(_OCCURRENCE_NS, f"{trigger_id}@{to_iso(fire_at)}"))


def new_id() -> str:
    """A version 7 UUID (RFC 9562) in canonical form: 48 bits of Unix milliseconds, then
    74 random bits. Ids made later sort later, so the event log's clustered index (its
    primary key) grows at its end, where the recent pages are in memory, instead of
    taking each new event at a random page; the outbox clear then updates a few
    neighbouring pages. Ids stay unguessable (the random bits) and any UUID parser reads
    them."""
    raw = bytearray((time.time_ns() // 1_000_000).to_bytes(6, "big") + os.urandom(10))
    raw[6] = raw[6] & 0x0F | 0x70  # version 7
    raw[8] = raw[8] & 0x3F | 0x80  # RFC 4122 variant
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


_UUID_TEXT = re.compile(r"[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}")


def parse_uuid(value: str) -> str | None:
    """The canonical (lower-case) form of a UUID path parameter, or None when it is not
    one (→ 404). Only the hyphenated 36-character form is an id: uuid.UUID() would also
    take `urn:uuid:…`, braces and 32 bare hex digits."""
    if not isinstance(value, str) or _UUID_TEXT.fullmatch(value) is None:
        return None
    return value.lower()


@dataclass(frozen=True)
class Trigger:
    id: str
    name: str
    type: str
    status: str
    config: TriggerConfig
    version: int
    created_at: datetime
    updated_at: datetime
    labels: Mapping[str, str] = field(default_factory=dict)  # kept in their own table
    # Why triggerd set it inactive (auto-disable); None otherwise.
    status_reason: str | None = None

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Trigger:
        created = from_db(row["created_at"])
        updated = from_db(row["updated_at"])
        assert created is not None and updated is not None
        return cls(
            id=row["id"],
            name=row["name"],
            type=row["type"],
            status=row["status"],
            config=stored_config(row["type"], orjson.loads(row["config"])),
            version=int(row["version"]),
            created_at=created,
            updated_at=updated,
            status_reason=row.get("status_reason"),
        )

    @property
    def is_scheduled(self) -> bool:
        return self.type in SCHEDULED_TYPES
