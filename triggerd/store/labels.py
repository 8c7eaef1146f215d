"""Trigger labels (table `trigger_labels`, one row a pair): written with the trigger in
its transaction, read for a page of triggers in one query, and the list filter."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from triggerd.store.db import Database
from triggerd.store.literals import statements, text

Selector = tuple[str, str | None]  # (key, value); None: any value


async def replace(cur: Any, trigger_id: str, labels: Mapping[str, str], *,
                  fresh: bool = False) -> None:  # fmt: skip
    """Make the trigger's labels exactly `labels` (`fresh`: it has none yet)."""
    if not fresh:
        await cur.execute("DELETE FROM trigger_labels WHERE trigger_id = %(id)s",
                          {"id": trigger_id})  # fmt: skip
    if labels:
        await cur.executemany(
            "INSERT INTO trigger_labels (trigger_id, label_key, label_value)"
            " VALUES (%s, %s, %s)",
            [(trigger_id, key, value) for key, value in labels.items()],
        )


def insert_statements(labelled: Iterable[tuple[str, Mapping[str, str]]]) -> list[str]:
    """Multi-row INSERTs of the labels of triggers that have none yet (new ones):
    (trigger id, labels) pairs, the values rendered as literals."""
    rows = [f"({text(trigger_id)},{text(key)},{text(value)})"
            for trigger_id, pairs in labelled for key, value in pairs.items()]  # fmt: skip
    return statements("INSERT INTO trigger_labels (trigger_id, label_key, label_value) VALUES ",
                      rows)  # fmt: skip


async def of(db: Database, trigger_ids: Sequence[str]) -> dict[str, dict[str, str]]:
    """The labels of each trigger that has some."""
    if not trigger_ids:
        return {}
    names = {f"id{i}": value for i, value in enumerate(trigger_ids)}
    placeholders = ", ".join(f"%({name})s" for name in names)
    rows = await db.fetchall(
        "SELECT trigger_id, label_key, label_value FROM trigger_labels"
        f" WHERE trigger_id IN ({placeholders}) ORDER BY trigger_id, label_key",
        names,
    )
    found: dict[str, dict[str, str]] = {}
    for row in rows:
        found.setdefault(row["trigger_id"], {})[row["label_key"]] = row["label_value"]
    return found


def filters(selectors: Sequence[Selector], column: str = "id") -> tuple[list[str], dict[str, Any]]:
    """WHERE clauses keeping the triggers that carry every selector."""
    clauses: list[str] = []
    params: dict[str, Any] = {}
    for i, (key, value) in enumerate(selectors):
        params[f"label_key{i}"] = key
        match = f"label_key = %(label_key{i})s"
        if value is not None:
            params[f"label_value{i}"] = value
            # The index finds the pair; BINARY then compares exactly: the column's
            # collation pads with spaces, so `=` alone would match "prod " for "prod".
            match += (f" AND label_value = %(label_value{i})s"
                      f" AND BINARY label_value = BINARY %(label_value{i})s")
        clauses.append(f"{column} IN (SELECT trigger_id FROM trigger_labels WHERE {match})")
    return clauses, params
