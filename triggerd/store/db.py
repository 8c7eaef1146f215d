"""The MySQL/MariaDB pool behind one object.

autocommit=True everywhere; `transaction()` opens one only where several statements
must commit together. A lost connection is dropped by the pool and the next acquire
opens a fresh one, so callers retry transient errors instead of reconnecting by hand.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from typing import Any

import aiomysql
import pymysql

from triggerd.config import DatabaseUrl
from triggerd.domain.errors import ConfigError
from triggerd.store.mysql_errors import URL_ERRORS, is_duplicate_key, is_transient

log = logging.getLogger(__name__)

__all__ = ["Database", "NotConnected", "Row", "is_duplicate_key", "is_transient", "url_error"]

Row = dict[str, Any]

def url_error(url: DatabaseUrl, exc: BaseException) -> ConfigError | None:
    """A one-line ConfigError naming TRIGGERD_DATABASE_URL when `exc` says the URL itself
    is wrong (the server's own words, the password redacted), else None."""
    if not isinstance(exc, pymysql.err.MySQLError) or len(exc.args) < 2:
        return None
    code, message = exc.args[0], " ".join(str(exc.args[1]).split())
    if code not in URL_ERRORS:
        return None
    return ConfigError(f"TRIGGERD_DATABASE_URL: {url.redacted()}: {message} (MySQL error {code})")


class NotConnected(ConnectionError):
    """The pool is not open yet (the daemon is still waiting for the database): as
    transient as a refused connection, so the API answers 503 and /health says down."""


class Database:
    """An aiomysql pool. `connect()` does the I/O; `__init__` does none."""

    def __init__(self, url: DatabaseUrl, *, pool_size: int = 10) -> None:
        self.url = url
        self.pool_size = pool_size
        self._pool: aiomysql.Pool | None = None

    async def connect(self) -> None:
        self._pool = await aiomysql.create_pool(
            host=self.url.host,
            port=self.url.port,
            user=self.url.user,
            password=self.url.password,
            db=self.url.database,
            minsize=1,
            maxsize=self.pool_size,
            autocommit=True,
            charset="utf8mb4",
            # Ping-on-acquire is done by aiomysql only when a connection errored; a
            # recycle bounds how long an idle connection can sit behind a dead server.
            pool_recycle=300,
            connect_timeout=5,
            init_command="SET time_zone = '+00:00'",
        )

    @property
    def connected(self) -> bool:
        return self._pool is not None

    async def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            await self._pool.wait_closed()
            self._pool = None

    @property
    def pool(self) -> aiomysql.Pool:
        if self._pool is None:
            raise NotConnected("not connected to the database")
        return self._pool

    @contextlib.asynccontextmanager
    async def acquire(self) -> AsyncIterator[aiomysql.Connection]:
        async with self.pool.acquire() as conn:
            try:
                yield conn
            except BaseException as exc:
                # A connection that saw a connection-level error (or a cancellation
                # mid-query, which leaves unread packets) must not go back to the pool.
                if is_transient(exc) or not isinstance(exc, Exception):
                    conn.close()
                raise

    @contextlib.asynccontextmanager
    async def transaction(self, *, read_committed: bool = False,
                          rows: type[aiomysql.Cursor] = aiomysql.DictCursor,
                          ) -> AsyncIterator[aiomysql.Cursor]:  # fmt: skip
        """A cursor inside BEGIN … COMMIT; rolls back on any error. `read_committed`: this
        transaction only runs READ COMMITTED (no gap locks: its range scans lock the rows
        they change, not the gaps and neighbours around them). `rows`: the cursor class,
        dict rows by default (aiomysql.Cursor: plain tuples, cheaper on hot reads)."""
        async with self.acquire() as conn:
            if read_committed:
                async with conn.cursor() as cur:
                    # Applies to the next transaction only; the pooled session keeps its default.
                    await cur.execute("SET TRANSACTION ISOLATION LEVEL READ COMMITTED")
            await conn.begin()
            try:
                async with conn.cursor(rows) as cur:
                    yield cur
                await conn.commit()
            except BaseException as exc:
                # Cancelled (a deadline, a shutdown): no ROLLBACK, which would wait on the
                # same server; the connection is closed instead (acquire), and the server
                # rolls back what it had not committed.
                if isinstance(exc, Exception):
                    with contextlib.suppress(Exception):
                        await conn.rollback()
                raise

    async def fetchall(self, sql: str, params: Any = None) -> list[Row]:
        async with self.acquire() as conn, conn.cursor(aiomysql.DictCursor) as cur:
            await cur.execute(sql, params)
            return list(await cur.fetchall())

    async def fetchone(self, sql: str, params: Any = None) -> Row | None:
        async with self.acquire() as conn, conn.cursor(aiomysql.DictCursor) as cur:
            await cur.execute(sql, params)
            row: Row | None = await cur.fetchone()
            return row

    async def execute(self, sql: str, params: Any = None) -> int:
        """Run one statement; returns the affected row count."""
        async with self.acquire() as conn, conn.cursor() as cur:
            return int(await cur.execute(sql, params))

    async def run(self, sql: str) -> int:
        """`execute` for a complete statement (no parameters, no result set) on the
        hottest paths: the connection's own query call, without a cursor and the
        context managers around it, which cost a third of a small INSERT's client CPU.
        Returns the affected row count."""
        async with self.pool.acquire() as conn:
            try:
                return int(await conn.query(sql))
            except BaseException as exc:
                if is_transient(exc) or not isinstance(exc, Exception):
                    conn.close()
                raise

    async def script(self, sql: str) -> list[int]:
        """Several complete statements (no parameters) separated by `;`, in ONE round
        trip: their affected row counts, in order. (aiomysql opens every connection with
        CLIENT.MULTI_STATEMENTS.) The server stops at a failing statement; a transaction
        the script opened is then rolled back, so the connection goes back clean."""
        async with self.pool.acquire() as conn:
            try:
                counts = [int(await conn.query(sql))]
                while conn._result is not None and conn._result.has_next:
                    counts.append(int(await conn.next_result()))
                return counts
            except BaseException as exc:
                if is_transient(exc) or not isinstance(exc, Exception):
                    conn.close()
                else:
                    with contextlib.suppress(Exception):
                        await conn.rollback()
                raise

    async def executemany(self, sql: str, params: Sequence[Any]) -> int:
        if not params:
            return 0
        async with self.acquire() as conn, conn.cursor() as cur:
            return int(await cur.executemany(sql, params))

    async def ping(self) -> None:
        await self.fetchone("SELECT 1 AS ok")


def log_failed_pass(log: logging.Logger, what: str, exc: Exception, failures: int,
                    pause: float) -> None:  # fmt: skip
    """How a background loop (`what`: "outbox relay", "delivery backstop") reports a
    pass that failed: a bug with its traceback every time; the database being down as
    one line on the first failure and every tenth after (an outage must not flood the
    log)."""
    if not is_transient(exc):
        log.exception("%s pass failed; retry in %.1fs", what, pause)
    elif failures == 1 or failures % 10 == 0:
        log.warning("%s: database unavailable (%s, %d in a row); retry in %.1fs",
                    what, exc, failures, pause)  # fmt: skip
