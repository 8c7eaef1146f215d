"""`GET /api/v1/endpoints`: every endpoint with a recorded attempt, open circuits first,
filtered by state, paginated as the other lists, bad query values a 400 naming the
parameter. The trigger counts come from the database's own cut of each trigger's
endpoint (triggers.endpoint_key), which must agree with the worker's."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest

from tests.integration.webhook_harness import Api, make_trigger, running_api
from triggerd.domain.circuit import Health, endpoint_key, endpoint_url
from triggerd.domain.enums import CircuitState
from triggerd.domain.timeutil import to_iso, utcnow
from triggerd.store import endpoints

BASE = "https://receiver.example"


@pytest.fixture
async def api(settings_for: Any) -> AsyncIterator[Api]:
    async with running_api(settings_for()) as running:
        yield running


async def seed(api: Api, url: str, health: Health) -> None:
    await endpoints.ensure(api.db, endpoint_key(url), endpoint_url(url), utcnow())
    await endpoints.transition(api.db, endpoint_key(url), endpoint_url(url), utcnow(),
                               lambda _: health)  # fmt: skip


async def test_lists_open_circuits_first_with_their_trigger_counts(api: Api) -> None:
    now = utcnow().replace(microsecond=0)
    probe = now + timedelta(seconds=30)
    await seed(api, f"{BASE}/a-closed", Health(last_success_at=now))
    await seed(api, f"{BASE}/b-open", Health(
        state=CircuitState.OPEN, consecutive_failures=12, failing_since=now,
        last_failure_at=now, opened_at=now, next_probe_at=probe, cooldown=30))
    await seed(api, f"{BASE}/c-half", Health(
        state=CircuitState.HALF_OPEN, consecutive_failures=10, opened_at=now,
        probe_until=probe, cooldown=30))  # fmt: skip
    # Two triggers on b-open (one with a query string: the same endpoint), one on a-closed.
    for url in (f"{BASE}/b-open", f"{BASE}/b-open?tenant=7", f"{BASE}/a-closed"):
        await make_trigger(api.db, config={"endpoint": url})
    await make_trigger(api.db, config={})  # no endpoint

    status, body = await api.get("/api/v1/endpoints")
    assert status == 200, body
    urls = [e["url"] for e in body["endpoints"]]
    assert urls == [f"{BASE}/b-open", f"{BASE}/c-half", f"{BASE}/a-closed"]
    assert body["pagination"] == {"current_page": 1, "page_size": 20, "total_pages": 1,
                                  "total_records": 3}  # fmt: skip
    opened = body["endpoints"][0]
    assert opened == {
        "url": f"{BASE}/b-open", "state": "open", "consecutive_failures": 12,
        "last_success_at": None, "last_failure_at": to_iso(now), "opened_at": to_iso(now),
        "next_probe_at": to_iso(probe), "triggers": 2,
    }  # fmt: skip
    assert body["endpoints"][1]["state"] == "half_open"
    assert body["endpoints"][1]["triggers"] == 0
    assert body["endpoints"][2]["triggers"] == 1
    assert body["endpoints"][2]["last_success_at"] == to_iso(now)

    status, body = await api.get("/api/v1/endpoints", state="closed")
    assert [e["url"] for e in body["endpoints"]] == [f"{BASE}/a-closed"]
    status, body = await api.get("/api/v1/endpoints", page="2", limit="2")
    assert [e["url"] for e in body["endpoints"]] == [f"{BASE}/a-closed"]
    assert body["pagination"]["total_pages"] == 2
    status, body = await api.get("/api/v1/endpoints", page="3", limit="2")
    assert status == 200 and body["endpoints"] == []


@pytest.mark.parametrize(("param", "value"), [("state", "broken"), ("page", "0"),
                                              ("limit", "101"), ("limit", "x")])  # fmt: skip
async def test_bad_query_values_name_the_parameter(api: Api, param: str, value: str) -> None:
    status, body = await api.get("/api/v1/endpoints", **{param: value})
    assert status == 400, body
    assert body["error"]["details"]["field"] == param
