"""`triggerd migrate`: apply sql/NNN_name.sql in order, once each.

Applied versions are recorded in schema_migrations. MySQL DDL is not transactional, so a
file that failed half-way is re-run from the top on the next attempt: "already exists"
errors of a statement that did land are skipped rather than fatal. A named lock keeps two
containers migrating at once from racing.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import site
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pymysql

from triggerd.domain.errors import SchemaVersionError
from triggerd.store.db import Database

log = logging.getLogger(__name__)

_COMMENT = re.compile(r"(^|\s)--(\s.*)?$")
_FILE = re.compile(r"^(\d{3,})_([A-Za-z0-9_]+)\.sql$")
# table exists, duplicate column, duplicate key name, duplicate foreign key
_ALREADY_DONE = {1050, 1060, 1061, 1826}


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    path: Path

    def statements(self) -> list[str]:
        """Split on `;` after dropping `-- ` comments (our migrations keep string
        literals free of both, which this simple splitter relies on)."""
        text = self.path.read_text(encoding="utf-8")
        lines = [_COMMENT.sub("", line) for line in text.splitlines()]
        return [stmt.strip() for stmt in "\n".join(lines).split(";") if stmt.strip()]


def sql_dirs() -> list[Path]:
    """Where migrations are looked for, in order: TRIGGERD_SQL_DIR, the source tree's
    sql/, then the installed data files under every prefix pip may have installed into:
    not always sys.prefix (Debian's system Python installs to /usr/local, its
    `posix_local` scheme), or the user's base."""
    override = os.environ.get("TRIGGERD_SQL_DIR")
    candidates = [Path(override)] if override else []
    candidates.append(Path(__file__).resolve().parents[2] / "sql")
    prefixes = [sys.prefix, sysconfig.get_paths()["data"], site.getuserbase()]
    for scheme in sysconfig.get_scheme_names():
        with contextlib.suppress(KeyError, ValueError):
            prefixes.append(sysconfig.get_paths(scheme)["data"])
    candidates += [Path(p) / "share" / "triggerd" / "sql" for p in dict.fromkeys(prefixes)]
    return candidates


def sql_dir() -> Path:
    """The first of sql_dirs() that holds migrations."""
    candidates = sql_dirs()
    for candidate in candidates:
        if candidate.is_dir() and any(candidate.glob("*.sql")):
            return candidate
    raise SchemaVersionError(f"no migrations found (looked in {', '.join(map(str, candidates))})")


def discover(directory: Path | None = None) -> list[Migration]:
    found = []
    for path in sorted((directory or sql_dir()).iterdir()):
        match = _FILE.match(path.name)
        if match:
            found.append(Migration(int(match.group(1)), match.group(2), path))
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise SchemaVersionError(f"two migrations share a version in {directory}")
    return found


_HAS_TABLE = (
    "SELECT COUNT(*) FROM information_schema.tables"
    " WHERE table_schema = DATABASE() AND table_name = 'schema_migrations'"
)


async def _versions(cur: Any) -> set[int]:
    """Applied versions, read on the caller's connection (empty before the first run)."""
    await cur.execute(_HAS_TABLE)
    (count,) = await cur.fetchone()
    if not count:
        return set()
    await cur.execute("SELECT version FROM schema_migrations")
    return {int(row[0]) for row in await cur.fetchall()}


async def applied_versions(db: Database) -> set[int]:
    async with db.acquire() as conn, conn.cursor() as cur:
        return await _versions(cur)


async def migrate(db: Database, directory: Path | None = None) -> list[Migration]:
    """Apply pending migrations; returns the ones applied (empty when up to date)."""
    migrations = discover(directory)
    applied: list[Migration] = []
    # Everything runs on the connection that holds the lock: a pool of one is enough.
    async with db.acquire() as conn, conn.cursor() as cur:
        await cur.execute("SELECT GET_LOCK('triggerd_migrate', 60)")
        (got,) = await cur.fetchone()
        if got != 1:
            raise SchemaVersionError("another process holds the migration lock")
        try:
            done = await _versions(cur)
            if not done:
                await cur.execute(_HAS_TABLE)
                (exists,) = await cur.fetchone()
                if not exists:  # CREATE … IF NOT EXISTS would still warn "table exists"
                    await cur.execute(
                        "CREATE TABLE schema_migrations ("
                        " version INT NOT NULL PRIMARY KEY,"
                        " name VARCHAR(255) NOT NULL,"
                        " applied_at DATETIME(3) NOT NULL"
                        ") ENGINE=InnoDB"
                    )
            for migration in migrations:
                if migration.version in done:
                    continue
                log.info("applying migration %03d_%s", migration.version, migration.name)
                for statement in migration.statements():
                    try:
                        await cur.execute(statement)
                    except pymysql.err.OperationalError as exc:
                        if exc.args and exc.args[0] in _ALREADY_DONE:
                            continue
                        raise
                await cur.execute(
                    "INSERT INTO schema_migrations (version, name, applied_at)"
                    " VALUES (%s, %s, UTC_TIMESTAMP(3))",
                    (migration.version, migration.name),
                )
                applied.append(migration)
        finally:
            await cur.execute("SELECT RELEASE_LOCK('triggerd_migrate')")
            await cur.fetchall()
    return applied


async def check_schema(db: Database, directory: Path | None = None) -> None:
    """`run` refuses a database that is not exactly at this build's schema."""
    expected = {m.version for m in discover(directory)}
    have = await applied_versions(db)
    missing = sorted(expected - have)
    if missing:
        raise SchemaVersionError(
            f"database schema is not migrated (missing {', '.join(map(str, missing))});"
            " run `triggerd migrate` first"
        )
    newer = sorted(have - expected)
    if newer:
        raise SchemaVersionError(
            f"database schema is newer than this build (unknown versions {newer});"
            " upgrade triggerd"
        )
