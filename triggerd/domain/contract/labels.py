"""Labels: up to 20 key/value pairs on a trigger, to organise and filter triggers.

A key is 1-63 characters of `a-z 0-9 . _ / -`, starting with a letter or digit; a value
is a string of 0-255 characters. The list filter `label=key:value` keeps the triggers
carrying that pair, `label=key:` those that have the key.
"""

import re
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import Field, StringConstraints

from triggerd.domain.contract.fields import JsonSchema, _Check, invalid

MAX_LABELS = 20
MAX_KEY_CHARS = 63
MAX_VALUE_CHARS = 255
KEY_PATTERN = r"^[a-z0-9][a-z0-9._/-]*$"
_KEY = re.compile(r"[a-z0-9][a-z0-9._/-]*")  # fullmatch: `$` would let a "key\n" through

LabelKey = Annotated[str, StringConstraints(strict=True, min_length=1, max_length=MAX_KEY_CHARS,
                                            pattern=KEY_PATTERN)]  # fmt: skip
LabelValue = Annotated[str, StringConstraints(strict=True, max_length=MAX_VALUE_CHARS)]
Labels = Annotated[dict[LabelKey, LabelValue], Field(
    max_length=MAX_LABELS, examples=[{"team": "payments", "env": "prod"}],
    description=f"Up to {MAX_LABELS} pairs: keys of 1-{MAX_KEY_CHARS} characters of a-z 0-9 "
                f". _ / - starting with a letter or digit, string values of 0-"
                f"{MAX_VALUE_CHARS} characters")]  # fmt: skip


@dataclass(frozen=True)
class LabelSelector(_Check):
    """`key:value` (that pair) or `key:` (any value): a (key, value or None) tuple."""

    def check(self, value: Any) -> tuple[str, str | None]:
        if not isinstance(value, str) or ":" not in value:
            invalid("must be key:value, or key: for any value")
        key, _, wanted = value.partition(":")
        if not 0 < len(key) <= MAX_KEY_CHARS or not _KEY.fullmatch(key):
            invalid(f"{key!r} is not a label key (1-{MAX_KEY_CHARS} of a-z 0-9 . _ / -, "
                    "starting with a letter or digit)")  # fmt: skip
        if len(wanted) > MAX_VALUE_CHARS:
            invalid(f"a label value has at most {MAX_VALUE_CHARS} characters")
        return key, wanted or None

    def schema(self) -> JsonSchema:
        return {"type": "string", "pattern": "^[a-z0-9][a-z0-9._/-]{0,62}:",
                "maxLength": MAX_KEY_CHARS + 1 + MAX_VALUE_CHARS,
                "example": "team:payments"}  # fmt: skip

