"""The HTTP API's contract, declared once: every request and response body as a typed
model. From these models come request validation (`validate_create`,
`validate_update`), the OpenAPI components (api.docs) and the typed objects the store,
scheduler and worker read (`TriggerDefinition`, a `TriggerConfig` per type)."""

from triggerd.domain.contract.configs import (
    CONFIG_MODELS,
    CRON_MACROS,
    MAX_SECONDS,
    PAST_GRACE,
    CronScheduledConfig,
    IntervalScheduledConfig,
    RetryConfig,
    ScheduledConfig,
    TimeScheduledConfig,
    TriggerConfig,
    WebhookConfig,
    stored_config,
)
from triggerd.domain.contract.endpoints import Endpoint, EndpointList, EndpointListQuery
from triggerd.domain.contract.paging import Pagination, QueryModel
from triggerd.domain.contract.triggers import (
    MAX_NAME_CHARS,
    STATUSES,
    TRIGGER_TYPES,
    Trigger,
    TriggerDefinition,
    TriggerList,
    TriggerListQuery,
    TriggerUpdate,
)
from triggerd.domain.contract.validate import schedule_changed, validate_create, validate_update

__all__ = [
    "CONFIG_MODELS", "CRON_MACROS", "MAX_NAME_CHARS", "MAX_SECONDS", "PAST_GRACE", "STATUSES",
    "TRIGGER_TYPES", "CronScheduledConfig", "Endpoint", "EndpointList", "EndpointListQuery",
    "IntervalScheduledConfig", "Pagination",
    "QueryModel", "RetryConfig", "ScheduledConfig", "TimeScheduledConfig", "Trigger",
    "TriggerConfig", "TriggerDefinition", "TriggerList", "TriggerListQuery", "TriggerUpdate",
    "WebhookConfig", "schedule_changed", "stored_config", "validate_create", "validate_update"
]  # fmt: skip
