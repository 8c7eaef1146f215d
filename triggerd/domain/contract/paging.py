"""Lists: the `pagination` object, and query strings declared as models (a bad value is a
400 naming the parameter; an empty value is no value)."""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Self, get_args, get_origin

from pydantic import ConfigDict, Field, model_validator

from triggerd.domain.contract.base import Model
from triggerd.domain.contract.errors import validated
from triggerd.domain.contract.fields import JsonSchema, _Check, invalid
from triggerd.domain.errors import ValidationError


class Pagination(Model):
    current_page: int = Field(description="1-based page number")
    page_size: int = Field(description="The `limit` of this page")
    total_pages: int
    total_records: int

    @classmethod
    def of(cls, page: int, limit: int, total: int) -> dict[str, int]:
        """The JSON of one page's pagination."""
        return {"current_page": page, "page_size": limit,
                "total_pages": (total + limit - 1) // limit, "total_records": total}  # fmt: skip


@dataclass(frozen=True)
class QueryInt(_Check):
    """An integer written in ASCII digits, in [low, high]."""

    low: int
    high: int

    def check(self, value: Any) -> int:
        if isinstance(value, int) and not isinstance(value, bool):  # a default
            raw = str(value)
        elif isinstance(value, str):
            raw = value
        else:
            invalid("must be an integer")
        # ASCII digits only: int() would also take "1_0" and non-ASCII digits.
        digits = raw[1:] if raw.startswith("-") else raw
        if not digits.isascii() or not digits.isdigit():
            invalid(f"must be an integer, got {raw[:40]!r}")
        if len(digits.lstrip("0")) > 18:  # beyond any bound here; int() refuses 4,300 digits
            invalid(f"must be between {self.low} and {self.high}")
        number = int(raw)
        if not self.low <= number <= self.high:
            invalid(f"must be between {self.low} and {self.high}")
        return number

    def schema(self) -> JsonSchema:
        return {"type": "integer", "minimum": self.low, "maximum": self.high}


def _is_list(annotation: Any) -> bool:
    return get_origin(annotation) is list or any(_is_list(arg) for arg in get_args(annotation))


class QueryModel(Model):
    """A query string. Unknown parameters are ignored; a parameter may be given several
    times only where the field is a list (else it is a 400 naming it: which of two values
    was meant cannot be guessed)."""

    model_config = ConfigDict(extra="ignore")
    # Parameters that page the list, as opposed to filters ("empty: no filter").
    PAGING: ClassVar[frozenset[str]] = frozenset({"page", "limit"})

    @model_validator(mode="before")
    @classmethod
    def _empty_is_absent(cls, data: Any) -> Any:
        if isinstance(data, dict):
            return {key: value for key, value in data.items() if value not in ("", [], None)}
        return data

    @classmethod
    def lists(cls) -> frozenset[str]:
        """The parameters that may be given several times."""
        return frozenset(name for name, field in cls.model_fields.items()
                         if _is_list(field.annotation))  # fmt: skip

    @classmethod
    def parse(cls, query: Any) -> Self:
        """From a multidict (aiohttp's `request.query`) or a plain mapping."""
        data: dict[str, Any] = {}
        many = cls.lists()
        for name in cls.model_fields:
            if name not in query:
                continue
            if name in many:  # an empty value is no value here too
                given = query.getall(name) if hasattr(query, "getall") else _as_list(query[name])
                data[name] = [value for value in given if value != ""]
            else:
                if hasattr(query, "getall") and len(query.getall(name)) > 1:
                    raise ValidationError(name, "must be given once")
                data[name] = query[name]
        return validated(cls, data, depth=1)


def _as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, Sequence) and not isinstance(value, str) else [value]
