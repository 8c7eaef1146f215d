"""The entry points: a create or update body in, a `TriggerDefinition` out, or one
`ValidationError` naming the field. Pure: the clock is injected."""

from datetime import datetime
from typing import Any

from triggerd.domain.contract.configs import CONFIG_MODELS
from triggerd.domain.contract.errors import adapted, validated
from triggerd.domain.contract.triggers import CREATE, TriggerDefinition, TriggerUpdate
from triggerd.domain.enums import TriggerType, values
from triggerd.domain.errors import ValidationError

_TAGS = values(TriggerType)


def validate_create(body: object, *, now: datetime) -> TriggerDefinition:
    """Validate a create (or ephemeral test) body; `now` is the injected clock."""
    if not isinstance(body, dict):
        raise ValidationError("body", "must be a JSON object")
    created = adapted(CREATE, body, context={"now": now}, tags=_TAGS)
    return TriggerDefinition(name=created.name, type=TriggerType(created.type),
                             status=created.status, config=created.config,
                             labels=created.labels)  # fmt: skip


def validate_update(
    body: object, current: TriggerDefinition, *, now: datetime, trigger_id: str | None = None
) -> TriggerDefinition:
    """Partial update of name, status and config; a new config replaces the old one and
    is validated as on create. `type` may be repeated but not changed; the other fields
    GET returns are ignored (`id`, when given, must be `trigger_id`)."""
    if not isinstance(body, dict):
        raise ValidationError("body", "must be a JSON object")
    update = validated(TriggerUpdate, body)
    if update.id is not None and update.id != trigger_id:
        raise ValidationError("id", "is not the id of the trigger being updated")
    if update.type is not None and update.type != current.type:
        raise ValidationError("type", "cannot be changed")
    config = current.config
    if update.config is not None:
        context: dict[str, Any] = {"now": now, "previous": current.config}
        config = validated(CONFIG_MODELS[current.type], update.config, context=context,
                           at=("config",))  # fmt: skip
    return TriggerDefinition(
        name=current.name if update.name is None else update.name,
        type=current.type,
        status=current.status if update.status is None else update.status,
        config=config,
        labels=current.labels if update.labels is None else update.labels,
    )


def schedule_changed(old: TriggerDefinition, new: TriggerDefinition) -> bool:
    """Whether the timing differs, i.e. pending occurrences must be recomputed. Status
    changes are the caller's business."""
    if old.type != new.type:
        return True
    return old.config.timing() != new.config.timing()
