"""Database.script: several statements in one round trip."""

from __future__ import annotations

import pymysql
import pytest

from triggerd.store.db import Database


async def test_counts_come_back_in_order_and_a_failure_rolls_back(db: Database) -> None:
    await db.execute("CREATE TABLE t (id INT PRIMARY KEY, v INT NOT NULL)")
    assert await db.script("BEGIN; INSERT INTO t VALUES (1, 0), (2, 0);"
                           " UPDATE t SET v = 1 WHERE id = 2; COMMIT") == [0, 2, 1, 0]
    with pytest.raises(pymysql.err.IntegrityError):  # the server stops at the duplicate
        await db.script("BEGIN; UPDATE t SET v = 9; INSERT INTO t VALUES (1, 0);"
                        " UPDATE t SET v = 7; COMMIT")  # fmt: skip
    rows = await db.fetchall("SELECT id, v FROM t ORDER BY id")
    assert rows == [{"id": 1, "v": 0}, {"id": 2, "v": 1}]
    for _ in range(3):  # every script connection is clean again: no transaction left open
        assert await db.script("UPDATE t SET v = v + 1 WHERE id = 1;"
                               " UPDATE t SET v = 0 WHERE id = 99") == [1, 0]
    assert (await db.fetchone("SELECT v FROM t WHERE id = 1")) == {"v": 3}
