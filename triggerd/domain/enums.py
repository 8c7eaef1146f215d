"""The closed sets of values the daemon speaks in. Each is a StrEnum, so a member is
its own wire and column value: `Source.SCHEDULER == "scheduler"`, and JSON, SQL
parameters and metric labels need no conversion."""

from __future__ import annotations

from enum import StrEnum


class Role(StrEnum):
    API = "api"
    SCHEDULER = "scheduler"
    WORKER = "worker"
    RETENTION = "retention"


class TriggerType(StrEnum):
    WEBHOOK = "webhook"
    TIME_SCHEDULED = "time_scheduled"
    CRON_SCHEDULED = "cron_scheduled"
    INTERVAL_SCHEDULED = "interval_scheduled"

    @property
    def is_scheduled(self) -> bool:
        return self is not TriggerType.WEBHOOK


class TriggerStatus(StrEnum):
    ACTIVE = "active"
    INACTIVE = "inactive"


class Source(StrEnum):
    """Who fired an event."""

    WEBHOOK = "webhook"
    SCHEDULER = "scheduler"
    MANUAL_TEST = "manual-test"
    BACKFILL = "backfill"


class ExecutionStatus(StrEnum):
    PENDING = "pending"
    RETRYING = "retrying"
    SUCCESS = "success"
    FAILED = "failed"
    PUBLISHED = "published"  # a webhook trigger without an endpoint: Kafka is the end


class RetentionStatus(StrEnum):
    ACTIVE = "active"
    ARCHIVED = "archived"


class ScheduleStatus(StrEnum):
    PENDING = "pending"
    PROCESSING = "processing"
    COMPLETED = "completed"
    CANCELLED = "cancelled"
    MISSED = "missed"  # passed over by the misfire policy after downtime


class Outcome(StrEnum):
    """What became of an occurrence, as the occurrence history shows it."""

    PENDING = "pending"  # schedule rows pending or processing
    FIRED = "fired"  # completed
    MISSED = "missed"
    CANCELLED = "cancelled"


class MisfirePolicy(StrEnum):
    """What fires of the occurrences missed while no scheduler ran."""

    LATEST = "latest"  # the most recent one
    SKIP = "skip"  # none
    ALL = "all"  # each one within the catch-up window, oldest first


class AttemptClaim(StrEnum):
    """What claiming a delivery attempt found (store.deliveries.claim_attempt)."""

    NEW = "new"  # nobody had it: deliver
    RESTARTED = "restarted"  # its worker died mid-delivery: taken over, deliver again
    BUSY = "busy"  # another worker may be delivering it right now: ask again later
    FINISHED = "finished"  # someone completed it: nothing to do


class Verdict(StrEnum):
    """How one delivery attempt's answer is read."""

    SUCCESS = "success"
    RETRY = "retry"
    FAIL = "fail"


class CircuitState(StrEnum):
    """An endpoint's circuit breaker (domain/circuit.py)."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class HttpMethod(StrEnum):
    GET = "GET"
    POST = "POST"
    PUT = "PUT"
    PATCH = "PATCH"
    DELETE = "DELETE"


def values(enum: type[StrEnum]) -> tuple[str, ...]:
    """The members' values in declaration order (for SQL IN lists, filters, metrics)."""
    return tuple(member.value for member in enum)


SCHEDULED_TYPES = tuple(t for t in TriggerType if t.is_scheduled)
IN_FLIGHT = (ExecutionStatus.PENDING, ExecutionStatus.RETRYING)
FINAL_STATUSES = (ExecutionStatus.SUCCESS, ExecutionStatus.FAILED, ExecutionStatus.PUBLISHED)
