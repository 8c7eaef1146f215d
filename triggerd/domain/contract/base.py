"""What every model of the contract shares: frozen; request bodies closed to unknown keys,
with null read as "not given"."""

from datetime import datetime
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationInfo, model_validator

from triggerd.domain.contract.fields import JsonSchema


def _nullable_optionals(schema: JsonSchema, model: type[BaseModel]) -> None:
    """The document says what the validator does: an optional key may be null."""
    required = set(schema.get("required", ()))
    for name, prop in schema.get("properties", {}).items():
        if name not in required and prop.get("type") != "null":
            prop["nullable"] = True


def _known_keys(model: type[BaseModel]) -> set[str]:
    return {field.alias or name for name, field in model.model_fields.items()}


class Model(BaseModel):
    """A response shape: frozen; the document leaves it open to keys added later."""

    model_config = ConfigDict(frozen=True)


class RequestModel(Model):
    """A request body: no unknown keys. `null` for a key means the key was not given (a
    required key is then missing, an optional one takes its default), except for the
    keys in NULL_IS_VALUE, where null is a value (a payload may be null)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=_nullable_optionals)
    NULL_IS_VALUE: ClassVar[frozenset[str]] = frozenset()

    @model_validator(mode="before")
    @classmethod
    def _nulls_are_absent(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data  # pydantic's own "must be an object" error
        known, keep = _known_keys(cls), cls.NULL_IS_VALUE
        return {key: value for key, value in data.items()
                if value is not None or key not in known or key in keep}  # fmt: skip


# --- the validation context --------------------------------------------------------------
# Rules that need more than the value read it from pydantic's context: `now` (the
# injected clock), `previous` (the stored config an update replaces), `stored` (a config
# read back from the database: trusted, so the rules that depend on the clock are off).


def context_now(info: ValidationInfo) -> datetime:
    context = info.context or {}
    now = context.get("now")
    if not isinstance(now, datetime):
        raise TypeError("validating a trigger definition needs context={'now': datetime}")
    return now


def context_previous(info: ValidationInfo) -> Any:
    return (info.context or {}).get("previous")


def is_stored(info: ValidationInfo) -> bool:
    return bool((info.context or {}).get("stored"))


STORED: dict[str, Any] = {"stored": True}
