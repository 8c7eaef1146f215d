"""Auto-disable: a trigger whose endpoint has had no successful delivery for
TRIGGERD_ENDPOINT_DISABLE_AFTER while attempts kept failing is set `inactive`, with
`status_reason: "endpoint failing since <timestamp>"` (cleared when it is set active
again). The circuit (worker/circuit.py) asks after a failed attempt; the store does the
change as an update to `inactive` would, with its audit entries (actor `system`), in one
transaction per endpoint."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from triggerd.domain.access import SYSTEM
from triggerd.domain.redact import redact_url
from triggerd.domain.timeutil import utcnow
from triggerd.logs import log_context
from triggerd.services import Services
from triggerd.store import endpoints
from triggerd.worker.aio import retry_transient

log = logging.getLogger(__name__)


class AutoDisable:
    def __init__(self, services: Services) -> None:
        self.services = services
        self.after = services.settings.endpoint_disable_after

    async def __call__(self, key: str, url: str, failing_since: datetime) -> None:
        now = utcnow()
        reason = endpoints.failing_reason(failing_since)
        cutoff = now - timedelta(seconds=self.after)
        disabled = await retry_transient(
            lambda: endpoints.disable_triggers(self.services.db, key, reason,
                                               unchanged_since=cutoff, now=now),
            "disabling the triggers of a failing endpoint",
        )  # fmt: skip
        for trigger_id in disabled:
            with log_context(trigger_id=trigger_id):
                log.warning("trigger set inactive: %s (%s)", reason, redact_url(url),
                            extra={"endpoint": redact_url(url), "actor": SYSTEM})  # fmt: skip
            self.services.metrics.triggers_disabled.inc()
            # In this process: the scheduler reloads, webhook ingestion drops its cache.
            self.services.trigger_changes.notify(trigger_id)
