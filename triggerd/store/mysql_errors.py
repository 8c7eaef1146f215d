"""What MySQL's and MariaDB's error codes mean to the daemon: the one place that knows
them. A fault is transient (the server is away, or the statement lost a lock race and
was rolled back: run it again), a URL problem (fail start-up), or a duplicate key."""

from __future__ import annotations

import pymysql

DUPLICATE_KEY = 1062
LOCK_WAIT_TIMEOUT = 1205
DEADLOCK = 1213

# The statement lost a race for row locks and was rolled back whole: safe to run again.
LOCK_CONFLICTS = frozenset({LOCK_WAIT_TIMEOUT, DEADLOCK})

# The server is not reachable right now, not "the query is wrong".
_UNREACHABLE = frozenset({
    1040,  # too many connections
    1053,  # server shutdown in progress
    1927,  # connection was killed (MariaDB)
    2003,  # can't connect
    2006,  # server has gone away
    2013,  # lost connection during query
    2014,  # commands out of sync
    2055,  # lost connection (network)
})  # fmt: skip

# Seen while a server restarts; MariaDB may report them as an InternalError.
RESTARTING = frozenset({1053, 1927})  # server shutdown in progress, connection killed

# The database URL itself is wrong: waiting does not fix them.
URL_ERRORS = frozenset({
    1044,  # access denied to the database
    1045,  # access denied (user or password)
    1049,  # unknown database
    1142,  # command denied on a table
})  # fmt: skip


def code_of(exc: BaseException) -> int | None:
    if isinstance(exc, pymysql.err.MySQLError) and exc.args and isinstance(exc.args[0], int):
        return exc.args[0]
    return None


def is_lock_conflict(exc: BaseException) -> bool:
    return isinstance(exc, pymysql.err.OperationalError) and code_of(exc) in LOCK_CONFLICTS


def is_transient(exc: BaseException) -> bool:
    """Worth retrying with backoff: connection-level failures and lock conflicts."""
    if isinstance(exc, (ConnectionError, TimeoutError, OSError)):
        return True
    if isinstance(exc, pymysql.err.OperationalError | pymysql.err.InterfaceError):
        code = code_of(exc)
        return code is None or code in _UNREACHABLE or code in LOCK_CONFLICTS or code >= 2000
    return False


def is_duplicate_key(exc: BaseException) -> bool:
    return isinstance(exc, pymysql.err.IntegrityError) and code_of(exc) == DUPLICATE_KEY
