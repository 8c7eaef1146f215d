"""A migrated database on a private MariaDB, for the benchmarks that time SQL alone."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import pymysql

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from triggerd.config import DatabaseUrl  # noqa: E402
from triggerd.devstack import MariaDBServer  # noqa: E402
from triggerd.store.db import Database  # noqa: E402
from triggerd.store.migrations import migrate  # noqa: E402


def migrated(mariadb: MariaDBServer, name: str) -> Any:
    """A new database `name` on the started `mariadb`, with triggerd's schema, and one
    autocommit pymysql connection to it that may send several statements at once."""
    url = mariadb.create_database(name)

    async def schema() -> None:
        db = Database(DatabaseUrl.parse(url), pool_size=1)
        await db.connect()
        try:
            await migrate(db)
        finally:
            await db.close()

    asyncio.run(schema())
    return pymysql.connect(host="127.0.0.1", port=mariadb.port, user="root", database=name,
                           autocommit=True,
                           client_flag=pymysql.constants.CLIENT.MULTI_STATEMENTS)  # fmt: skip
