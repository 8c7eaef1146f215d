"""API keys and what each may do.

A key has a name (the actor recorded in the audit log) and a scope: `write` may call
every `/api/v1` route, `read` only the ones that change nothing (GET and HEAD). Keys
come from two places:

- `TRIGGERD_API_KEYS`, comma-separated: full access, named `env-key-<position>`;
- `TRIGGERD_API_KEYS_FILE`, one key a line: a bare key (full access, named
  `key-<line number>`) or `<name> <scope> <key>` separated by whitespace. Blank lines
  and comments (`#` at the start of a line or after whitespace) are ignored.

A fault in the file is reported by line number and never quotes the line: a field in
the wrong place may be the key itself.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum

ANONYMOUS = "anonymous"  # the actor while no key is configured (an open API)
SYSTEM = "system"  # the actor of changes the daemon makes by itself
RESERVED_NAMES = frozenset({ANONYMOUS, SYSTEM})
MAX_NAME_CHARS = 64  # the audit log's actor column

# Names go into the audit log and its `actor` filter: short, no spaces, no quoting.
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@:/+-]{0,63}")  # fullmatch
# Keys travel in a header: printable ASCII without spaces.
_KEY = re.compile(r"[\x21-\x7e]+")  # fullmatch
# A comment starts with `#` at the start of a line or after whitespace, so a `#` inside
# a key is part of the key.
_COMMENT = re.compile(r"(^|\s)#.*$")
_READ_METHODS = frozenset({"GET", "HEAD"})


class Scope(StrEnum):
    READ = "read"
    WRITE = "write"


@dataclass(frozen=True)
class ApiKey:
    """A configured key. The secret never appears in a repr (nor so in a log line)."""

    name: str
    scope: Scope
    secret: str = field(repr=False)

    def may(self, method: str) -> bool:
        """Whether this key may call a route with `method`."""
        return self.scope is Scope.WRITE or method in _READ_METHODS


class KeyFileError(ValueError):
    """A bad line of the keys file; the message names the line, never its content."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(f"line {line}: {message}")
        self.line = line


def env_keys(secrets: Sequence[str]) -> list[ApiKey]:
    """The keys of TRIGGERD_API_KEYS: full access, named by their position. Raises
    ValueError (naming positions, never keys) when one is listed twice."""
    keys: list[ApiKey] = []
    seen: dict[str, int] = {}
    for number, secret in enumerate(secrets, start=1):
        if secret in seen:
            raise ValueError(f"keys {seen[secret]} and {number} are the same key")
        seen[secret] = number
        keys.append(ApiKey(f"env-key-{number}", Scope.WRITE, secret))
    return keys


def parse_keys_file(text: str, existing: Sequence[ApiKey] = ()) -> list[ApiKey]:
    """The keys of a keys file, in line order. Raises KeyFileError for the first bad
    line; a name or a key already used (by `existing` or an earlier line) is one: the
    audit log could not tell two keys of one name apart, and which scope a repeated key
    has would be ambiguous."""
    keys: list[ApiKey] = []
    # Where each name and key was first seen: "line 2", or "env-key-1" of `existing`.
    names = {key.name: key.name for key in existing}
    secrets = {key.secret: key.name for key in existing}
    for number, line in enumerate(text.splitlines(), start=1):
        key = _parse_line(number, line)
        if key is None:
            continue
        if key.name in names:
            # Not quoted: with the fields swapped, the "name" would be the key itself.
            raise KeyFileError(number, f"the name (first field) is already used"
                                       f" ({names[key.name]})")  # fmt: skip
        if key.secret in secrets:
            raise KeyFileError(number, f"the same key as {secrets[key.secret]}")
        where = f"line {number}"
        names[key.name] = secrets[key.secret] = where
        keys.append(key)
    return keys


def _parse_line(number: int, line: str) -> ApiKey | None:
    fields = _COMMENT.sub("", line).split()
    if not fields:
        return None
    if len(fields) == 1:
        name, scope, secret = f"key-{number}", Scope.WRITE.value, fields[0]
    elif len(fields) == 3:
        name, scope, secret = fields
    else:
        raise KeyFileError(number, f"has {len(fields)} fields; expected a key alone,"
                                   " or <name> <scope> <key>")  # fmt: skip
    if not NAME_PATTERN.fullmatch(name):
        raise KeyFileError(number, "the name (first field) must be 1-64 letters, digits"
                                   " or ._@:/+- and start with a letter or digit")  # fmt: skip
    if name.lower() in RESERVED_NAMES:
        raise KeyFileError(number, f"the names {' and '.join(sorted(RESERVED_NAMES))}"
                                   " are reserved for the audit log")  # fmt: skip
    if scope not in (Scope.READ, Scope.WRITE):
        raise KeyFileError(number, "the scope (second field) must be read or write")
    if not _KEY.fullmatch(secret):
        raise KeyFileError(number, "the key must be printable ASCII without spaces")
    return ApiKey(name, Scope(scope), secret)


__all__ = ["ANONYMOUS", "MAX_NAME_CHARS", "NAME_PATTERN", "RESERVED_NAMES", "SYSTEM", "ApiKey",
           "KeyFileError", "Scope", "env_keys", "parse_keys_file"]  # fmt: skip
