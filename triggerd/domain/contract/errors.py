"""pydantic's errors as ours: the first one becomes `ValidationError(field, message)`, the
field a dotted path (`config.retry.max_attempts`, `config.headers.X-Foo`, `body`)."""

from collections.abc import Sequence
from typing import Any, NoReturn, TypeVar

import pydantic
from pydantic import BaseModel, TypeAdapter
from pydantic_core import ErrorDetails

from triggerd.domain.contract.fields import INVALID
from triggerd.domain.errors import ValidationError

M = TypeVar("M", bound=BaseModel)

_MESSAGES = {
    "missing": "is required",
    "extra_forbidden": "is not a known field",
    "model_type": "must be a JSON object",
    "model_attributes_type": "must be a JSON object",
    "dict_type": "must be a JSON object",
    "union_tag_not_found": "is required",
}


def validated(model: type[M], data: Any, *, context: dict[str, Any] | None = None,
              at: Sequence[str] = (), depth: int | None = None) -> M:  # fmt: skip
    """`model` from `data`, or the ValidationError of its first fault; `at` is where
    `data` sits in the body (`("config",)`); `depth` cuts the field's path (a query
    parameter is named, not the place of a bad value in its list)."""
    try:
        return model.model_validate(data, context=context)
    except pydantic.ValidationError as exc:
        raise_first(exc, at, depth=depth)


def adapted(adapter: TypeAdapter[Any], data: Any, *, context: dict[str, Any] | None = None,
            tags: Sequence[str] = ()) -> Any:  # fmt: skip
    """As `validated`, for a union chosen by a discriminator whose values are `tags`."""
    try:
        return adapter.validate_python(data, context=context)
    except pydantic.ValidationError as exc:
        raise_first(exc, (), tags=tags)


def raise_first(exc: pydantic.ValidationError, at: Sequence[str] = (), *,
                tags: Sequence[str] = (), depth: int | None = None) -> NoReturn:  # fmt: skip
    """Raise the ValidationError of the first fault: unknown keys before the rest, the
    shallowest unknown key first (as a reader scans the body)."""
    errors = sorted(exc.errors(include_url=False), key=_precedence)
    error = errors[0]
    # A fault in a mapping's key is named by the key (pydantic adds a "[key]" step).
    loc = [str(part) for part in error["loc"] if part != "[key]"]
    if loc and loc[0] in tags:  # the discriminated union names the chosen shape first
        loc = loc[1:]
    path = [*at, *loc]
    kind = error["type"]
    ctx = error.get("ctx") or {}
    if kind == INVALID:
        message = str(ctx["message"])
        if "field" in ctx:
            path.append(str(ctx["field"]))
    elif kind == "extra_forbidden" and loc and loc[-1] == "":
        path, message = path[:-1], "has an empty key"  # name the object, not ""
    elif kind == "too_long" and "max_length" in ctx:
        message = f"at most {ctx['max_length']} items"
    elif kind in ("union_tag_not_found", "union_tag_invalid"):
        path = [*at, "type"]
        message = _MESSAGES.get(kind) or f"must be one of {', '.join(tags)}"
    else:
        message = _MESSAGES.get(kind) or _lower(error["msg"])
    raise ValidationError(".".join(path[:depth]) or "body", message) from None


def _precedence(error: ErrorDetails) -> tuple[int, int]:
    if error["type"] == "extra_forbidden":
        return 0, len(error["loc"])
    return 1, 0


def _lower(message: str) -> str:
    return message[:1].lower() + message[1:]
