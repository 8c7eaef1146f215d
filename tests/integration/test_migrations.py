"""Migrations: applied once, recorded, and a second run changes nothing."""

from __future__ import annotations

import json
import os
import site
import subprocess
import sys
import sysconfig
from pathlib import Path
from typing import Any

import pytest

from triggerd.config import DatabaseUrl
from triggerd.domain.circuit import endpoint_key
from triggerd.store import migrations
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


async def test_the_endpoint_hash_keeps_the_keys_the_database_computed(
    db_server: Any, tmp_path: Path
) -> None:
    """Migration 010 turns the endpoint key computed from the config into one triggerd
    writes: the triggers stored before it keep the same key (the worker's)."""
    older = tmp_path / "sql"
    older.mkdir()
    for migration in discover():
        if migration.version < 10:
            (older / migration.path.name).write_text(migration.path.read_text())
    url = db_server.create()
    db = Database(DatabaseUrl.parse(url), pool_size=1)
    await db.connect()
    try:
        await migrate(db, older)
        endpoints = ["https://a.example/hook?tenant=7#top", "http://b.example:8080/x", None]
        for i, endpoint in enumerate(endpoints):
            config = json.dumps({"endpoint": endpoint} if endpoint else {})
            await db.execute(
                "INSERT INTO triggers (id, name, type, status, config, version, created_at,"
                " updated_at) VALUES (%s, 'old', 'webhook', 'active', %s, 1, NOW(), NOW())",
                (f"00000000-0000-0000-0000-00000000000{i}", config))  # fmt: skip
        assert [m.version for m in await migrate(db)] == [10]
        rows = await db.fetchall("SELECT endpoint_hash FROM triggers ORDER BY id")
        assert [r["endpoint_hash"] for r in rows] == [
            endpoint_key(e) if e else None for e in endpoints]
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


def test_installed_migrations_are_found_under_any_install_scheme(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """pip on Debian's system Python puts data files under /usr/local (its posix_local
    scheme), not sys.prefix: every scheme's data prefix is searched."""
    prefix = tmp_path / "local"
    (prefix / "share" / "triggerd" / "sql").mkdir(parents=True)
    (prefix / "share" / "triggerd" / "sql" / "001_init.sql").write_text("SELECT 1;\n")
    real = sysconfig.get_paths

    def paths(scheme: str | None = None, *args: Any, **kwargs: Any) -> dict[str, str]:
        if scheme == "posix_local":  # Debian's; this Python may not have it
            return {"data": str(prefix)}
        return dict(real(scheme, *args, **kwargs) if scheme else real(*args, **kwargs))

    monkeypatch.setattr(sysconfig, "get_scheme_names", lambda: ("posix_prefix", "posix_local"))
    monkeypatch.setattr(sysconfig, "get_paths", paths)
    monkeypatch.delenv("TRIGGERD_SQL_DIR", raising=False)
    monkeypatch.setattr(sys, "prefix", str(tmp_path / "elsewhere"))
    monkeypatch.setattr(site, "getuserbase", lambda: str(tmp_path / "user"))
    assert prefix / "share" / "triggerd" / "sql" in migrations.sql_dirs()
    monkeypatch.setattr(migrations, "__file__", str(tmp_path / "nowhere" / "a" / "b.py"))
    assert migrations.sql_dir() == prefix / "share" / "triggerd" / "sql"
