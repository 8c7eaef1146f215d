"""Request helpers shared by the routes: JSON bodies, query parameters, JSON responses."""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web
from aiohttp.web_protocol import RequestPayloadError

from triggerd.domain.errors import ApiError, ClientGone, NotFound, ValidationError


def json_response(
    data: Any, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        body=orjson.dumps(data, default=str),
        status=status,
        content_type="application/json",
        headers=headers,
    )


def _is_json_type(content_type: str) -> bool:
    return content_type == "application/json" or (
        content_type.startswith("application/") and content_type.endswith("+json")
    )


async def read_raw_json(request: web.Request, *, optional: bool = False) -> tuple[bytes, Any]:
    """The raw body (for HMAC checks) and its parsed JSON.

    415 for a non-JSON content type, 413 past the body limit (raised by aiohttp while
    reading, turned into the envelope by the error middleware), 400 for malformed JSON.
    With `optional`, an empty body (of any declared type) parses to None.
    """
    raw = await read_body(request)
    if optional and not raw.strip(b" \t\r\n"):  # JSON whitespace only
        return raw, None
    return raw, parse_json(request, raw)


async def read_body(request: web.Request) -> bytes:
    """The request body: 400 when it cannot be decoded (a `Content-Encoding: gzip` body
    that is not gzip, broken chunked framing), ClientGone when the client hung up while
    sending it (not a dependency outage: nothing to log beyond a line)."""
    try:
        return await request.read()
    except RequestPayloadError as exc:
        # The rest of the body is unreadable: mark it consumed (else aiohttp tries to read
        # it again after the answer and logs that as an unhandled error), and close the
        # connection after the 400, since the framing of what follows is unknown.
        request.content.feed_eof()
        error = ApiError(f"the request body could not be read: {exc}", code="malformed_body")
        error.close_connection = True
        raise error from None
    except ConnectionError as exc:
        raise ClientGone(str(exc) or "connection lost") from None


def parse_json(request: web.Request, raw: bytes) -> Any:
    """The JSON of a body already read: 415 for a non-JSON content type, 400 when
    malformed."""
    return parse_json_as(request.content_type, raw)


def parse_json_as(content_type: str, raw: bytes) -> Any:
    """parse_json for a body whose parsed Content-Type (aiohttp's `content_type`: the
    media type without its parameters, lower case) is `content_type`."""
    if not _is_json_type(content_type):
        raise ApiError(
            f"expected Content-Type application/json, got {content_type or 'none'}",
            status=415,
            code="unsupported_media_type",
        )
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ApiError(f"malformed JSON body: {exc}", code="malformed_json") from None
    if _LONG_DIGITS.search(raw) is not None:
        _refuse_wide_integers(raw)
    return value


# orjson reads an integer beyond 64 bits as a float, silently changing the payload a
# target receives; 19 digits or more in a row is where one might be (or a long string).
_LONG_DIGITS = re.compile(rb"\d{19}")
_INT_RANGE = range(-(2**63), 2**64)


def _refuse_wide_integers(raw: bytes) -> None:
    """400 when the body holds an integer orjson would have turned into a float."""
    try:
        exact = json.loads(raw)  # Python's own reader keeps integers exact
    except (ValueError, RecursionError):
        return
    stack = [exact]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack += item.values()
        elif isinstance(item, list):
            stack += item
        elif type(item) is int and item not in _INT_RANGE:
            raise ApiError("integers must fit in 64 bits (-2^63 to 2^64-1); send larger "
                           "numbers as strings", code="number_out_of_range")  # fmt: skip


async def read_json(request: web.Request, *, optional: bool = False) -> Any:
    return (await read_raw_json(request, optional=optional))[1]


def query_one(request: web.Request, name: str) -> str | None:
    """The query parameter `name`, given at most once (a second value would be silently
    dropped: 400 instead, as domain/contract/paging.py answers for the other lists)."""
    given = request.query.getall(name, ())
    if len(given) > 1:
        raise ValidationError(name, "must be given once")
    return given[0] if given else None


def query_int(request: web.Request, name: str, default: int, lo: int, hi: int) -> int:
    raw = query_one(request, name)
    if raw is None or raw == "":  # `?page=` as every other empty filter: not given
        return default
    # ASCII digits only: int() would also take "1_0" and non-ASCII digits.
    digits = raw[1:] if raw.startswith("-") else raw
    if not digits.isascii() or not digits.isdigit():
        raise ValidationError(name, f"must be an integer, got {raw[:40]!r}")
    if len(digits.lstrip("0")) > 18:  # beyond any bound here; int() refuses 4,300 digits
        raise ValidationError(name, f"must be between {lo} and {hi}")
    value = int(raw)
    if not lo <= value <= hi:
        raise ValidationError(name, f"must be between {lo} and {hi}")
    return value


def query_choice(request: web.Request, name: str, options: tuple[str, ...]) -> str | None:
    raw = query_one(request, name)
    if raw is None or raw == "":
        return None
    if raw not in options:
        raise ValidationError(name, f"must be one of {', '.join(options)}")
    return raw


def pagination(page: int, limit: int, total: int) -> dict[str, int]:
    return {
        "current_page": page,
        "page_size": limit,
        "total_pages": (total + limit - 1) // limit,
        "total_records": total,
    }


def file_server(
    directory: Path, assets: Mapping[str, str], headers: Mapping[str, str]
) -> Callable[[web.Request], Awaitable[web.FileResponse]]:
    """A handler for `.../{name}` that serves the files named in `assets` (name ->
    Content-Type) from `directory`, with `headers`; any other name is the envelope's 404,
    so there is no listing and no path to traverse."""

    async def serve(request: web.Request) -> web.FileResponse:
        name = request.match_info["name"]
        media = assets.get(name)
        if media is None:
            raise NotFound("no such file")
        return web.FileResponse(directory / name, headers={"Content-Type": media, **headers})

    return serve
