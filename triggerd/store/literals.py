"""SQL literals rendered by us, for the multi-row statements of the hot paths.

At thousands of rows a second, the driver's generic parameter escaping (a type dispatch
and an escape per value) costs more than the database does. These render the few types
the hot statements carry. Strings are escaped as the driver does (backslash escapes:
triggerd never sets NO_BACKSLASH_ESCAPES).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Hashable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Generic, TypeVar

from pymysql.converters import escape_string

V = TypeVar("V", bound=Hashable)


def text(value: str | None) -> str:
    return "NULL" if value is None else "'" + escape_string(value) + "'"


def json_hex(value: bytes) -> str:
    """JSON as a hex literal with a character set introducer: the server reads it as
    utf8mb4 text (what a JSON column takes on MySQL 8 and MariaDB), and bytes.hex() costs
    a fifteenth of escaping the text in Python."""
    return "_utf8mb4 X'" + value.hex() + "'"


_UUID_CHARS = re.compile(r"[0-9a-fA-F-]{36}")


def uuid_text(value: str) -> str:
    """One id as a quoted literal for a statement run without parameters: a canonical
    UUID as it is, anything else escaped."""
    return "'" + value + "'" if _UUID_CHARS.fullmatch(value) else text(value)


def uuid_literals(ids: Sequence[str]) -> str:
    """`'id','id',…` for an IN list of a statement that also takes %s parameters: our
    ids are canonical UUIDs, quoted as they are; anything else is escaped (and its %
    doubled for the driver's formatting)."""
    return ",".join(
        "'" + i + "'" if _UUID_CHARS.fullmatch(i) else text(i).replace("%", "%%")
        for i in ids
    )


def statements(
    head: str, rows: Iterable[str], tail: str = "", *, limit: int = 2 * 1024 * 1024
) -> list[str]:
    """`head` + rows joined by commas + `tail`, as few statements as keep each under
    `limit` characters (well below any max_allowed_packet); none for no rows."""
    out: list[str] = []
    batch: list[str] = []
    size = 0
    for row in rows:
        if batch and size + len(row) > limit:
            out.append(head + ",".join(batch) + tail)
            batch, size = [], 0
        batch.append(row)
        size += len(row) + 1
    if batch:
        out.append(head + ",".join(batch) + tail)
    return out


def int_list(ids: Iterable[int]) -> str:
    """`1,2,3` for an IN list of integer ids (int() makes anything else an error, never
    SQL)."""
    return ",".join([str(int(i)) for i in ids])


def time_literal(value: datetime) -> str:
    """A DATETIME(3) literal of a UTC time (naive values are taken as UTC)."""
    utc = value.astimezone(UTC) if value.tzinfo else value
    return "'" + utc.isoformat(" ", "milliseconds")[:23] + "'"


class Literals(Generic[V]):
    """The literals of one batch, each value rendered once: the rows of a batch share a
    handful of times, trigger ids and names. None is NULL."""

    __slots__ = ("_render", "_seen")

    def __init__(self, render: Callable[[V], str]) -> None:
        self._render = render
        self._seen: dict[V | None, str] = {None: "NULL"}

    def __call__(self, value: V | None) -> str:
        literal = self._seen.get(value)
        if literal is None:
            assert value is not None  # None is in _seen from the start
            literal = self._seen[value] = self._render(value)
        return literal


def times() -> Literals[datetime]:
    return Literals(time_literal)


def texts() -> Literals[str]:
    return Literals(text)


def case_of(column: str, keys: Sequence[str], values: Sequence[str]) -> str:
    """The value of a column in a statement that updates exactly the rows of `keys`
    (literals of `column`), row by row: `CASE column WHEN key THEN value … END`, or the
    one value they all share."""
    if values.count(values[0]) == len(values):
        return values[0]
    whens = " ".join([f"WHEN {k} THEN {v}" for k, v in zip(keys, values, strict=True)])
    return f"CASE {column} {whens} END"
