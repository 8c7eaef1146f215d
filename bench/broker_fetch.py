"""What the embedded broker (tansu) costs the worker's path: fetch latency and broker CPU
for several fetch waits (`TRIGGERD_KAFKA_FETCH_WAIT`).

    python bench/broker_fetch.py [--rate 200] [--seconds 8] [--waits 10,50,100]

Starts a private broker (triggerd.devstack), then for each wait: a producer sends one
job per produce request at `--rate` per second, and a consumer-group member (as the
worker: manual commits, at most one per 50 ms) reads them with that fetch wait. Prints,
per wait, the latency from send to fetch (p50/p99) and the broker's CPU as a share of a
core. This is the broker's behaviour, not triggerd's: it explains the "published →
attempt claimed" stage of bench/ingest.py on this machine. Apache Kafka answers a fetch
as soon as a record arrives; tansu answers when the wait runs out.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from machine import cpu_seconds, describe  # noqa: E402  (bench/machine.py, beside this script)

from triggerd.devstack import KafkaBroker  # noqa: E402

_COMMIT_EVERY = 0.05  # seconds, as the worker's commit loop


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)]


async def measure(bootstrap: str, pid: int, wait_ms: int, rate: int, seconds: float) -> str:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    topic = f"fetch-{wait_ms}"
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=0)
    await producer.start()
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, group_id=f"bench-{wait_ms}",
        enable_auto_commit=False, auto_offset_reset="earliest", fetch_max_wait_ms=wait_ms,
        session_timeout_ms=6000, heartbeat_interval_ms=1000,
    )  # fmt: skip
    try:
        await producer.send_and_wait(topic, b"warm-up")  # creates the topic
        await consumer.start()
        while not await consumer.getmany(timeout_ms=1000):  # joined, and read the warm-up
            pass
        latencies: list[float] = []

        async def consume() -> None:
            last_commit = 0.0
            while True:
                batches = await consumer.getmany(timeout_ms=200)
                now = time.monotonic()
                for records in batches.values():
                    latencies.extend(now - float(record.value) for record in records)
                if batches and now - last_commit >= _COMMIT_EVERY:
                    await consumer.commit()
                    last_commit = now

        reader = asyncio.create_task(consume())
        cpu_before, started, sent = cpu_seconds(pid), time.monotonic(), 0
        while (elapsed := time.monotonic() - started) < seconds:
            await producer.send_and_wait(topic, repr(time.monotonic()).encode())
            sent += 1
            await asyncio.sleep(max(0.0, sent / rate - elapsed))
        broker_cpu = (cpu_seconds(pid) - cpu_before) / (time.monotonic() - started)
        deadline = time.monotonic() + 5
        while len(latencies) < sent and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
    finally:
        await consumer.stop()
        await producer.stop()
    if not latencies:
        return f"fetch wait {wait_ms:>4} ms: nothing consumed"
    return (f"fetch wait {wait_ms:>4} ms: {len(latencies)}/{sent} fetched, send -> fetch"
            f" p50 {percentile(latencies, 0.5) * 1000:.1f} ms,"
            f" p99 {percentile(latencies, 0.99) * 1000:.1f} ms;"
            f" broker {broker_cpu * 100:.1f}% of a core")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=int, default=200, help="jobs (produce requests) a second")
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--waits", default="10,50,100", help="fetch waits to try, in ms")
    args = parser.parse_args()
    print(describe())
    print(f"one job per produce request, {args.rate}/s for {args.seconds:g}s, one group member")
    broker = KafkaBroker()
    broker.start()
    try:
        assert broker.proc is not None
        for wait in (int(w) for w in args.waits.split(",")):
            line = asyncio.run(measure(broker.bootstrap, broker.proc.pid, wait, args.rate,
                                       args.seconds))  # fmt: skip
            print(line, flush=True)
    finally:
        broker.stop()


if __name__ == "__main__":
    main()
