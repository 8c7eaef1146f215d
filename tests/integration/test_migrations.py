"""Migrations: applied once, recorded, and a second run changes nothing."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

from triggerd.config import DatabaseUrl
from triggerd.store.db import Database
from triggerd.store.migrations import discover, migrate


async def _schema_snapshot(db: Database) -> list[tuple[Any, ...]]:
    rows = await db.fetchall(
        "SELECT table_name, column_name, column_type, is_nullable, column_default"
        " FROM information_schema.columns WHERE table_schema = DATABASE()"
        " ORDER BY table_name, ordinal_position"
    )
    indexes = await db.fetchall(
        "SELECT table_name, index_name, column_name, seq_in_index"
        " FROM information_schema.statistics"
        " WHERE table_schema = DATABASE() ORDER BY table_name, index_name, seq_in_index"
    )
    return [tuple(r.values()) for r in rows] + [tuple(r.values()) for r in indexes]


async def test_migrate_twice_changes_nothing(db_server: Any) -> None:
    url = db_server.create()
    db = Database(DatabaseUrl.parse(url), pool_size=1)
    await db.connect()
    try:
        first = await migrate(db)
        assert [m.version for m in first] == [m.version for m in discover()]
        snapshot = await _schema_snapshot(db)
        versions = await db.fetchall("SELECT version, applied_at FROM schema_migrations")
        assert await migrate(db) == []
        assert await _schema_snapshot(db) == snapshot
        assert await db.fetchall("SELECT version, applied_at FROM schema_migrations") == versions
        tables = {r["table_name"] for r in await db.fetchall(
            "SELECT table_name AS table_name FROM information_schema.tables"
            " WHERE table_schema = DATABASE()")}  # fmt: skip
        assert {"triggers", "trigger_schedules", "event_logs", "delivery_attempts",
                "idempotency_keys", "schema_migrations"} <= tables  # fmt: skip
    finally:
        await db.close()
        db_server.drop(url)


def test_migrate_command_is_idempotent(db_server: Any) -> None:
    url = db_server.create()
    env = {**os.environ, "TRIGGERD_DATABASE_URL": url}
    try:
        first = subprocess.run([sys.executable, "-m", "triggerd", "migrate"], env=env,
                               capture_output=True, text=True, timeout=60)  # fmt: skip
        assert first.returncode == 0, first.stderr
        assert "001_initial" in first.stdout
        second = subprocess.run([sys.executable, "-m", "triggerd", "migrate"], env=env,
                                capture_output=True, text=True, timeout=60)  # fmt: skip
        assert second.returncode == 0, second.stderr
        assert "nothing to do" in second.stdout
    finally:
        db_server.drop(url)
