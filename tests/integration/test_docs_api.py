"""docs/api.md stays in step with the OpenAPI document the daemon serves: every
operation has its heading, every property of every component schema is named, every
error code the API can answer is listed, and nothing is documented that is not served."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_openapi import build, operations

ROOT = Path(__file__).resolve().parents[2]
API_MD = ROOT / "docs" / "api.md"
_METHODS = "GET|HEAD|POST|PUT|PATCH|DELETE"
# A heading names one or more operations: `### PUT /api/v1/triggers/{id}, PATCH /api/v1/…`
_OPERATION = re.compile(rf"\b({_METHODS}) (/[^\s,]*)")


@pytest.fixture(scope="module")
def text() -> str:
    return API_MD.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return build()[1]


def headed_operations(text: str) -> set[tuple[str, str]]:
    found: set[tuple[str, str]] = set()
    for line in text.splitlines():
        if line.startswith("#"):
            found |= {(method, path) for method, path in _OPERATION.findall(line)}
    return found


def test_every_operation_has_a_heading(text: str, document: dict[str, Any]) -> None:
    served = set(operations(document))
    headed = headed_operations(text)
    assert sorted(served - headed) == [], "operations missing a heading in docs/api.md"
    assert sorted(headed - served) == [], "docs/api.md documents operations nobody serves"


def _properties(schema: Any) -> Iterator[str]:
    """Property names of a schema and of every schema nested in it."""
    if isinstance(schema, dict):
        yield from (schema.get("properties") or {})
        for value in schema.values():
            yield from _properties(value)
    elif isinstance(schema, list):
        for item in schema:
            yield from _properties(item)


def test_every_schema_property_is_named(text: str, document: dict[str, Any]) -> None:
    components = document["components"]["schemas"]
    names = set(_properties(components))
    assert {"event_id", "current_page", "max_attempts", "delivery_attempts"} <= names
    missing = sorted(name for name in names if f"`{name}`" not in text)
    assert missing == [], "properties docs/api.md never names (in backticks)"


# Where the API's error codes are written: keyword arguments and class attributes
# (`code="…"`, `code: str = "…"`), status tables (`404: "not_found"`), and the
# (status, code, …) pairs handed to the envelope.
_CODE_PATTERNS = (
    re.compile(r'\bcode\s*(?::\s*str\s*)?=\s*"([a-z][a-z_]*)"'),
    re.compile(r'\b[1-5]\d\d:\s*"([a-z][a-z_]*)"'),
    re.compile(r'(?:error_response\(|return )\s*[1-5]\d\d,\s*"([a-z][a-z_]*)"'),
    re.compile(r'\bcode, \w+ = "([a-z][a-z_]*)"'),
)


def error_codes() -> set[str]:
    codes: set[str] = set()
    for path in (ROOT / "triggerd").rglob("*.py"):
        source = path.read_text(encoding="utf-8")
        for pattern in _CODE_PATTERNS:
            codes.update(pattern.findall(source))
    return codes


def test_every_error_code_is_listed(text: str) -> None:
    codes = error_codes()
    # The scan still finds the codes: a refactor that hides them fails here, not silently.
    assert {"validation_error", "not_found", "unavailable", "malformed_json"} <= codes
    assert len(codes) >= 20, sorted(codes)
    missing = sorted(code for code in codes if f"`{code}`" not in text)
    assert missing == [], "error codes docs/api.md does not list"
