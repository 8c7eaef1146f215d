"""Nothing lost: webhooks accepted while Kafka is down end on Kafka once it is
back, published by the outbox relay (the worker colleague's OutboxRelay, run here in
process next to the API)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from tests.integration.webhook_harness import make_trigger, running_api
from tests.support import read_jobs, wait_until
from triggerd.devstack import KafkaBroker

relay_module = pytest.importorskip("triggerd.relay")


@pytest.fixture
def broker() -> Iterator[KafkaBroker]:
    """A broker of this test's own, so it can be stopped and started again."""
    private = KafkaBroker()
    private.start()
    yield private
    private.close()


async def test_webhooks_accepted_during_a_kafka_outage_are_published_later(
    broker: KafkaBroker, settings_for: Any
) -> None:
    settings = settings_for(kafka_bootstrap=broker.bootstrap, kafka_partitions=1)
    async with running_api(settings) as api:
        relay = asyncio.create_task(relay_module.OutboxRelay(api.services).run())
        try:
            trigger_id = await make_trigger(api.db)
            url = f"/api/v1/webhook/{trigger_id}"
            status, body = await api.post(url, {"phase": "before"})
            assert status == 202, body

            await asyncio.to_thread(broker.stop)
            during: list[str] = []
            for n in range(10):
                status, body = await asyncio.wait_for(api.post(url, {"n": n}), timeout=5)
                assert status == 202, body  # accepted: durable in the table, owed to Kafka
                during.append(body["event_id"])
            marks = ", ".join(["%s"] * len(during))
            rows = await api.db.fetchall(f"SELECT id FROM event_logs WHERE id IN ({marks})", during)
            assert len(rows) == 10

            await asyncio.sleep(1)  # let publish attempts against the dead broker fail
            restarted = KafkaBroker(port=broker.port)
            await asyncio.to_thread(restarted.start)
            broker.proc = restarted.proc  # the fixture stops it

            wanted = set(during)
            jobs = await read_jobs(broker.bootstrap, settings.kafka_topic, count=10, timeout=45,
                                   match=lambda j: j["event_id"] in wanted)  # fmt: skip
            assert {j["event_id"] for j in jobs} == wanted
            assert all(j["_key"] == trigger_id and j["attempt"] == 1 for j in jobs)

            async def settled() -> bool:
                owed = await api.db.fetchone(
                    "SELECT COUNT(*) AS n FROM event_logs WHERE publish_at IS NOT NULL"
                )
                return bool(owed and owed["n"] == 0)

            await wait_until(settled, timeout=20, what="every outbox mark cleared")
        finally:
            relay.cancel()
            await asyncio.gather(relay, return_exceptions=True)
