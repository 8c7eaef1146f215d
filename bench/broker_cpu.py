"""The embedded broker's (tansu) CPU over time under a steady job rate, as the daemon
produces and consumes: does it stay flat, or grow with what the broker has stored?

    python bench/broker_cpu.py [--minutes 30] [--rate 250] [--linger-ms L] [--partitions 6]

Starts a private broker (triggerd.devstack). Jobs of ~300 bytes, keyed by one of 1,000
trigger ids, are published through triggerd's own producer (`triggerd.bus.Bus`, with
its batching: `--linger-ms` is TRIGGERD_KAFKA_LINGER, default the daemon's) one per call
at Poisson arrivals of `--rate` a second, as webhooks arrive; a consumer-group member
reads them as the worker does (manual commits at most every 50 ms, `--fetch-wait-ms`).
Every `--report-every` seconds (default 60) it prints the broker's CPU as a share of a
core over that span, its resident memory, the jobs per produce batch (the broker stores
each batch as one object, and tansu 0.6.0's fetch lists a partition's stored objects)
and the latency from publish call to consume (p50/p99).
"""

from __future__ import annotations

import argparse
import asyncio
import math
import random
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from machine import cpu_seconds, describe  # noqa: E402  (bench/machine.py, beside this script)

from triggerd.bus.producer import Bus  # noqa: E402
from triggerd.config import Settings, load_settings  # noqa: E402
from triggerd.devstack import KafkaBroker  # noqa: E402

_COMMIT_EVERY = 0.05  # seconds, as the worker's commit loop
_PAD = "x" * 200  # a job's payload and metadata, roughly


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class Window:
    """What happened since the last report."""

    def __init__(self) -> None:
        self.sent = 0
        self.batches: set[tuple[int, int]] = set()  # (partition, base offset) of acks
        self.acked = 0
        self.latencies: list[float] = []


async def run(args: argparse.Namespace, broker: KafkaBroker) -> None:
    from aiokafka import AIOKafkaConsumer

    assert broker.proc is not None
    pid = broker.proc.pid
    topic = f"cpu-{uuid.uuid4().hex[:8]}"
    settings = load_settings({
        "TRIGGERD_KAFKA_BOOTSTRAP": broker.bootstrap, "TRIGGERD_KAFKA_TOPIC": topic,
        "TRIGGERD_KAFKA_PARTITIONS": str(args.partitions),
        "TRIGGERD_KAFKA_LINGER": f"{args.linger_ms}ms",
    })  # fmt: skip
    bus = Bus(settings)
    bus_task = asyncio.create_task(bus.run())
    if not await bus.wait_connected(timeout=30):
        raise SystemExit("the broker did not come up")
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=broker.bootstrap, group_id=f"bench-{topic}",
        enable_auto_commit=False, auto_offset_reset="earliest",
        fetch_max_wait_ms=args.fetch_wait_ms, max_poll_records=100,
        session_timeout_ms=10_000, heartbeat_interval_ms=3000,
    )  # fmt: skip
    await consumer.start()
    window = Window()
    keys = [str(uuid.uuid4()).encode() for _ in range(1000)]

    async def consume() -> None:
        last_commit = 0.0
        while True:
            batches = await consumer.getmany(timeout_ms=200)
            now = time.monotonic()
            for records in batches.values():
                for record in records:
                    window.latencies.append(now - float(record.value.split(b" ", 1)[0]))
            if batches and now - last_commit >= _COMMIT_EVERY:
                await consumer.commit()
                last_commit = now

    def acked(fut: asyncio.Future[object]) -> None:
        if fut.cancelled() or fut.exception() is not None:
            return
        meta = fut.result()
        window.batches.add((meta.partition, meta.offset))  # type: ignore[attr-defined]
        window.acked += 1

    async def produce() -> None:
        rng = random.Random(7)
        next_at = time.monotonic()
        while True:
            next_at += rng.expovariate(args.rate)
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            value = f"{time.monotonic()!r} {_PAD}".encode()
            [fut] = await bus.send_encoded([(rng.choice(keys), value, None)])
            window.sent += 1
            if isinstance(fut, asyncio.Future):
                fut.add_done_callback(acked)

    reader = asyncio.create_task(consume())
    writer = asyncio.create_task(produce())
    print(f"{'minute':>6} {'broker CPU':>10} {'RSS MB':>7} {'jobs/s':>7} {'jobs/batch':>10}"
          f" {'p50 ms':>7} {'p99 ms':>7}", flush=True)  # fmt: skip
    started = time.monotonic()
    cpu_before, at_before = cpu_seconds(pid), started
    try:
        while time.monotonic() - started < args.minutes * 60:
            await asyncio.sleep(min(args.report_every,
                                    started + args.minutes * 60 - time.monotonic()))  # fmt: skip
            now, cpu = time.monotonic(), cpu_seconds(pid)
            done, window_ = window, Window()
            window = window_
            span = now - at_before
            per_batch = done.acked / len(done.batches) if done.batches else float("nan")
            print(f"{(now - started) / 60:6.1f} {(cpu - cpu_before) / span * 100:9.1f}%"
                  f" {rss_mb(pid):7.0f} {done.sent / span:7.0f} {per_batch:10.1f}"
                  f" {percentile(done.latencies, 0.5) * 1000:7.1f}"
                  f" {percentile(done.latencies, 0.99) * 1000:7.1f}", flush=True)  # fmt: skip
            cpu_before, at_before = cpu, now
    finally:
        for task in (writer, reader, bus_task):
            task.cancel()
        await asyncio.gather(writer, reader, bus_task, return_exceptions=True)
        await consumer.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--rate", type=float, default=250.0, help="jobs a second")
    parser.add_argument("--linger-ms", type=float, default=Settings.kafka_linger * 1000,
                        help="TRIGGERD_KAFKA_LINGER (default: the daemon's)")  # fmt: skip
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--fetch-wait-ms", type=int, default=10)
    parser.add_argument("--report-every", type=float, default=60.0, help="seconds")
    args = parser.parse_args()
    print(describe())
    print(f"{args.rate:g} jobs/s for {args.minutes:g} min, linger {args.linger_ms:g} ms,"
          f" {args.partitions} partitions, fetch wait {args.fetch_wait_ms} ms")  # fmt: skip
    broker = KafkaBroker()
    broker.start()
    try:
        asyncio.run(run(args, broker))
    finally:
        broker.stop()


if __name__ == "__main__":
    main()
