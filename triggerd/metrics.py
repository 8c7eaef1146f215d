"""Prometheus metrics (docs/operations.md), on a registry owned by the daemon (not a global),
so every role in the process writes to the one `/metrics` serves.

Gauges that count rows in big tables (`triggerd_triggers`, `triggerd_schedules`,
`triggerd_events`) are refreshed by `GaugeRefresher` on an interval from grouped
COUNTs served by indexes — never a scan per scrape.
"""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import generate_latest

_DELAY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 60)
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.triggers = Gauge(
            "triggerd_triggers", "Triggers by type and status", ["type", "status"], registry=r
        )
        self.schedules = Gauge(
            "triggerd_schedules", "Schedule rows by status", ["status"], registry=r
        )
        self.schedule_lag = Gauge(
            "triggerd_schedule_lag_seconds",
            "How far the oldest unfired occurrence (pending or claimed) is past its due time;"
            " 0 when none is overdue",
            registry=r,
        )
        self.events = Gauge(
            "triggerd_events", "Event log rows by retention status", ["retention_status"],
            registry=r,
        )
        self.fires = Counter(
            "triggerd_fires_total", "Firings published", ["type", "source"], registry=r
        )
        self.fire_delay = Histogram(
            "triggerd_fire_delay_seconds", "Publish time minus due time of scheduled firings",
            buckets=_DELAY_BUCKETS, registry=r,
        )
        self.missed = Counter(
            "triggerd_missed_occurrences_total",
            "Occurrences missed while no scheduler ran and passed over by the trigger's"
            " misfire policy",
            ["policy"], registry=r,
        )
        self.publish_failures = Counter(
            "triggerd_publish_failures_total", "Jobs that failed to publish to Kafka", registry=r
        )
        self.jobs_too_large = Counter(
            "triggerd_jobs_too_large_total",
            "Jobs larger than Kafka accepts (TRIGGERD_KAFKA_MAX_REQUEST_SIZE, or the broker's"
            " limit): their events end failed instead of being retried",
            registry=r,
        )
        self.jobs_reowed = Counter(
            "triggerd_jobs_reowed_total",
            "Jobs published again because their delivery showed no progress (no attempt"
            " claimed) for TRIGGERD_REDELIVER_AFTER after they were published",
            registry=r,
        )
        self.deliveries = Counter(
            "triggerd_deliveries_total", "Finished deliveries by outcome", ["outcome"], registry=r
        )
        self.delivery_attempts = Counter(
            "triggerd_delivery_attempts_total", "HTTP delivery attempts", registry=r
        )
        self.delivery_latency = Histogram(
            "triggerd_delivery_latency_seconds", "HTTP delivery attempt latency",
            buckets=_LATENCY_BUCKETS, registry=r,
        )
        self.webhook_requests = Counter(
            "triggerd_webhook_requests_total", "Webhook ingestion requests by status code",
            ["code"], registry=r,
        )
        self.api_unauthorized = Counter(
            "triggerd_api_requests_unauthorized_total",
            "API requests refused for a missing or unknown key (401)", registry=r,
        )
        self.api_forbidden = Counter(
            "triggerd_api_requests_forbidden_total",
            "API requests refused because the key's scope does not allow them (403)",
            registry=r,
        )
        self.http_duration = Histogram(
            "triggerd_http_request_duration_seconds", "HTTP request duration",
            ["route", "method"], buckets=_LATENCY_BUCKETS, registry=r,
        )
        self.retention_moved = Counter(
            "triggerd_retention_rows_total", "Rows archived or deleted by retention",
            ["action"], registry=r,
        )
        self.role_up = Gauge(
            "triggerd_role_up",
            "1 while a role (or a component the roles depend on: ingest, outbox_relay) is"
            " running, 0 while it is starting, restarting or stopped; set at each scrape",
            ["role"], registry=r,
        )
        # Delivery safety (endpoint circuits, auto-disable, rate limits).
        self.endpoints = Gauge(
            "triggerd_endpoints", "Endpoints by circuit state", ["state"], registry=r
        )
        self.circuit_transitions = Counter(
            "triggerd_circuit_transitions_total",
            "Endpoint circuit transitions written by this process, by the state entered",
            ["to"], registry=r,
        )
        self.triggers_disabled = Counter(
            "triggerd_triggers_disabled_total",
            "Triggers set inactive because their endpoint kept failing", registry=r,
        )
        self.rate_limited = Counter(
            "triggerd_rate_limited_total",
            "Deliveries held back by their trigger's rate limit (each time one is put off)",
            registry=r,
        )

    def set_roles(self, states: Mapping[str, str]) -> None:
        """The supervisor's states (name -> "ok" or not) into `triggerd_role_up`."""
        for name, state in states.items():
            self.role_up.labels(name).set(1 if state == "ok" else 0)

    def render(self) -> bytes:
        return generate_latest(self.registry)
