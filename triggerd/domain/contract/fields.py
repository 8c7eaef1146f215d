"""Field types of the contract: each one validates a JSON value and describes itself in
JSON Schema, from the same few numbers, so a limit is written once.

Each type is an annotation for `typing.Annotated` (`Annotated[str, Text(255)]`). A bad
value fails with `invalid(message)`, which pydantic collects with the field's location;
`contract.errors` turns the first one into our `ValidationError("config.cron", ...)`.
JSON's types are taken as they are: no number from a string, no bool as a number, a
float that is a whole number comes back as an int (`60.0` -> `60`), as it is stored.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from typing import Any, NoReturn
from urllib.parse import urlsplit

import yarl
from pydantic import GetCoreSchemaHandler, GetJsonSchemaHandler
from pydantic_core import CoreSchema, PydanticCustomError, core_schema

from triggerd.domain.timeutil import parse_duration
from triggerd.domain.timing import get_zone

JsonSchema = dict[str, Any]

# The error type pydantic reports for our own rules; `field` (optional) is a path below
# the location pydantic knows (a header's name, or a key a model-wide rule names).
INVALID = "triggerd_invalid"


def invalid(message: str, field: str | None = None) -> NoReturn:
    context = {"message": message} if field is None else {"message": message, "field": field}
    raise PydanticCustomError(INVALID, "{message}", context)


class _Check:
    """A plain validator with its own JSON Schema: subclasses define both."""

    def check(self, value: Any) -> Any:
        raise NotImplementedError

    def schema(self) -> JsonSchema:
        raise NotImplementedError

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler
                                     ) -> CoreSchema:  # fmt: skip
        return core_schema.no_info_plain_validator_function(self.check)

    def __get_pydantic_json_schema__(self, schema: CoreSchema, handler: GetJsonSchemaHandler
                                     ) -> JsonSchema:  # fmt: skip
        return self.schema()


@dataclass(frozen=True)
class Text(_Check):
    """A string of 1..max_chars characters that is not only blanks."""

    max_chars: int
    pattern: str | None = None  # documented only: the rule that decides is in `check`

    def check(self, value: Any) -> str:
        if not isinstance(value, str):
            invalid("must be a string")
        if not value.strip():
            invalid("must not be empty")
        if len(value) > self.max_chars:
            invalid(f"must be at most {self.max_chars} characters")
        return value

    def schema(self) -> JsonSchema:
        out: JsonSchema = {"type": "string", "minLength": 1, "maxLength": self.max_chars}
        if self.pattern is not None:
            out["pattern"] = self.pattern
        return out


@dataclass(frozen=True)
class Number(_Check):
    """A finite JSON number in [low, high] (or (low, high]); a whole float becomes an int."""

    low: float
    high: float
    low_inclusive: bool = True
    integer: bool = False

    def check(self, value: Any) -> float:
        return number(value, self.low, self.high, low_inclusive=self.low_inclusive,
                      integer=self.integer)  # fmt: skip

    def schema(self) -> JsonSchema:
        out: JsonSchema = {"type": "integer" if self.integer else "number", "maximum": self.high}
        out["minimum" if self.low_inclusive else "exclusiveMinimum"] = self.low
        return out


def number(value: Any, low: float, high: float, *, low_inclusive: bool = True,
           integer: bool = False) -> float:  # fmt: skip
    """`Number`'s rule, for a bound only known at validation time."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        invalid("must be a number")
    if isinstance(value, float):
        if not math.isfinite(value):
            invalid("must be a finite number")
        if value.is_integer():
            value = int(value)
    too_low = value < low if low_inclusive else value <= low
    if too_low or value > high:
        invalid(f"must be {'>=' if low_inclusive else '>'} {low:g} and <= {high:g}")
    if integer and not isinstance(value, int):
        invalid("must be an integer")
    return value if isinstance(value, int) else float(value)


@dataclass(frozen=True)
class Choice(_Check):
    """One of `options`, exactly; with `upper`, matched and returned in upper case."""

    options: tuple[str, ...]
    upper: bool = False
    convert: Callable[[str], Any] | None = None  # e.g. a StrEnum

    def check(self, value: Any) -> Any:
        if isinstance(value, str) and self.upper:
            value = value.upper()
        if not isinstance(value, str) or value not in self.options:
            invalid(f"must be one of {', '.join(self.options)}")
        return value if self.convert is None else self.convert(value)

    def schema(self) -> JsonSchema:
        return {"type": "string", "enum": list(self.options)}


@dataclass(frozen=True)
class Endpoint(Text):
    """An absolute http(s) URL with a host, no blanks or control characters."""

    pattern: str | None = "^[Hh][Tt][Tt][Pp][Ss]?://"

    def check(self, value: Any) -> str:
        url = super().check(value)
        if any(char.isspace() or ord(char) < 0x20 or ord(char) == 0x7F for char in url):
            invalid("must not contain spaces or control characters")
        try:
            parts = urlsplit(url)
            host, _port = parts.hostname, parts.port
        except ValueError as exc:
            invalid(f"is not a valid URL: {exc}")
        if parts.scheme.lower() not in ("http", "https"):
            invalid("must be an absolute http or https URL")
        if not host:
            invalid("must name a host")
        numeric = _numeric_host(url, host)
        if numeric is not None:
            invalid(f"names the host {numeric!r}, which deliveries cannot reach: an IPv4"
                    " address is written as four decimal numbers (192.0.2.1), with no"
                    " trailing dot")  # fmt: skip
        _check_credentials(url)
        return url


def url_credentials(url: str) -> tuple[str | None, str | None]:
    """The URL's user name and password, decoded, as the worker's HTTP client reads them
    (both None when the URL has none)."""
    with suppress(ValueError, TypeError):
        parsed = yarl.URL(url)
        return parsed.user, parsed.password
    return None, None


def _check_credentials(url: str) -> None:
    """Credentials in the URL go out as Basic authentication, which cannot carry these:
    a delivery would fail every time, so they are refused now."""
    user, password = url_credentials(url)
    if user is not None and ":" in user:
        invalid("has a ':' in its user name, which Basic authentication reads as the start"
                " of the password (RFC 7617); percent-encoding it does not help")  # fmt: skip
    for part in (user, password):
        try:
            (part or "").encode("latin-1")
        except UnicodeEncodeError:
            invalid("has a user name or password outside Latin-1, which Basic authentication"
                    " cannot send")  # fmt: skip


def _numeric_host(url: str, host: str) -> str | None:
    """The URL's host when it is all digits and dots but not a dotted quad (127.1,
    2130706433, 0177.0.0.1, 127.0.0.1.), as the worker's HTTP client reads the host
    (yarl maps Unicode digits to ASCII). aiohttp refuses to connect to these legacy
    forms (a resolver would map them onto an address some policy never saw), so every
    delivery to one would fail: they are refused here instead."""
    with suppress(ValueError, TypeError):
        host = yarl.URL(url).host or host
    if ":" in host or not host.replace(".", "").isdigit():
        return None
    parts = host.split(".")
    canonical = len(parts) == 4 and all(
        1 <= len(part) <= 3 and part.isascii() and part.isdigit() and int(part) <= 255
        and (part == "0" or not part.startswith("0")) for part in parts)
    return None if canonical else host


@dataclass(frozen=True)
class Zone(Text):
    """An IANA time zone name."""

    def check(self, value: Any) -> str:
        name = super().check(value)
        try:
            get_zone(name)
        except ValueError as exc:
            invalid(str(exc))
        return name


@dataclass(frozen=True)
class Duration(_Check):
    """`500ms`, `90s`, `10m`, `2h`, `1d` or a number of seconds, > 0 and <= max_seconds;
    the value is seconds."""

    max_seconds: float

    def check(self, value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            invalid("must be a duration like 10m or a number of seconds")
        try:
            seconds = parse_duration(value)
        except (ValueError, OverflowError) as exc:
            invalid(str(exc))
        if not math.isfinite(seconds) or not 0 < seconds <= self.max_seconds:
            invalid(f"must be > 0 and at most {self.max_seconds:g} seconds")
        return seconds

    def schema(self) -> JsonSchema:
        return {"anyOf": [{"type": "string", "minLength": 1}, {"type": "number"}],
                "example": "10m"}  # fmt: skip


_HEADER_NAME = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_HEADER_VALUE_BAD = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
# Framing and hop-by-hop headers belong to the HTTP client.
_FORBIDDEN_HEADERS = frozenset({"content-length", "transfer-encoding", "connection", "upgrade",
                                "te", "trailer", "keep-alive", "proxy-connection"})  # fmt: skip


@dataclass(frozen=True)
class Headers(_Check):
    """Request headers: token names, given once ignoring case, not framing headers;
    string values without CR, LF or other control characters (a tab is fine)."""

    max_headers: int
    max_name_chars: int
    max_value_chars: int

    def check(self, value: Any) -> dict[str, str]:
        if not isinstance(value, dict):
            invalid("must be a JSON object")
        if len(value) > self.max_headers:
            invalid(f"at most {self.max_headers} headers")
        seen: set[str] = set()
        for name, text in value.items():
            if len(name) > self.max_name_chars or not _HEADER_NAME.match(name):
                invalid("is not a valid header name", name)
            if name.lower() in _FORBIDDEN_HEADERS:
                invalid("is set by the HTTP client and cannot be configured", name)
            if name.lower() in seen:
                invalid("is given twice (header names ignore case)", name)
            seen.add(name.lower())
            if not isinstance(text, str):
                invalid("must be a string", name)
            if len(text) > self.max_value_chars:
                invalid(f"must be at most {self.max_value_chars} characters", name)
            if _HEADER_VALUE_BAD.search(text):
                invalid("must not contain CR, LF or other control characters", name)
        return dict(value)

    def schema(self) -> JsonSchema:
        value: JsonSchema = {"type": "string", "maxLength": self.max_value_chars}
        return {"type": "object", "maxProperties": self.max_headers, "additionalProperties": value}


@dataclass(frozen=True)
class AnyJson(_Check):
    """Any JSON value, as it came (its storability is checked by the model, which knows
    the field's full path)."""

    def check(self, value: Any) -> Any:
        return value

    def schema(self) -> JsonSchema:
        return {}


__all__ = ["INVALID", "AnyJson", "Choice", "Duration", "Endpoint", "Headers", "Number", "Text",
           "Zone", "invalid", "number"]
