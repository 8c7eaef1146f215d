"""Retention and gauge cost on a big event log.

    python bench/retention.py [--events 1000000] [--batch-size 5000]
                              [--buffer-pool-mb 2048] [--redo-log-mb 2048] [--keep]

Starts a private MariaDB (triggerd.devstack; buffer pool and redo log resized to a
production-like 2 GB each), migrates, seeds N events with one
delivery attempt each (a tenth with an idempotency key), spread so that the whole log is
due: half past the delete window (48h), half between the archive (2h) and delete windows,
1% of them still `retrying` (held back), plus 1,000 triggers with 100 finished schedule
rows each past the delete window. Then it runs one retention pass with the real code
(`triggerd.retention.run_pass`), timing every statement, and the gauge refresh on the
result and on the seeded table.

Aims: the pass over 1M due rows < 60 s; no statement > 500 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections import defaultdict
from datetime import timedelta

from machine import describe  # bench/machine.py, beside this script

from triggerd.config import DatabaseUrl
from triggerd.devstack import MariaDBServer
from triggerd.domain.timeutil import to_db, utcnow
from triggerd.gauges import GaugeRefresher
from triggerd.metrics import Metrics
from triggerd.retention import Windows, run_pass
from triggerd.store.db import Database
from triggerd.store.events import RETENTION_STATUSES
from triggerd.store.migrations import migrate
from triggerd.store.retention import RetentionStore, RowCounts

ARCHIVE_AFTER = 2 * 3600.0
DELETE_AFTER = 48 * 3600.0
CHUNK = 100_000
TRIGGERS = 1000
SCHEDULES_PER_TRIGGER = 100

_UUID = "CONCAT_WS('-', SUBSTR({h},1,8), SUBSTR({h},9,4), SUBSTR({h},13,4), SUBSTR({h},17,4),"
_UUID += " SUBSTR({h},21,12))"
_NUMBERS = (
    "SELECT %(base)s + a.d + 10*b.d + 100*c.d + 1000*e.d + 10000*f.d AS n"
    " FROM bench_digits a, bench_digits b, bench_digits c, bench_digits e, bench_digits f"
)


def uuid_of(expr: str) -> str:
    return _UUID.format(h=f"MD5({expr})")


EVENT_ID = uuid_of("n")
TRIGGER_ID = uuid_of("CONCAT('t', n %% 1000)")  # of event n: one of the 1,000 triggers
TRIGGER_ROW_ID = uuid_of("CONCAT('t', n)")
# Of schedule row n: 50 h and more ago, a minute apart per trigger; settled then.
SCHEDULE_TIME = "%(now)s - INTERVAL (50*3600 + FLOOR(n / 1000) * 60) SECOND"


async def seed(db: Database, events: int) -> None:
    """INSERT … SELECT from a digits table (portable to MySQL 8), 100k rows a statement."""
    now = utcnow()
    await db.execute("CREATE TABLE bench_digits (d INT PRIMARY KEY)")
    await db.execute("INSERT INTO bench_digits VALUES (0),(1),(2),(3),(4),(5),(6),(7),(8),(9)")
    half = events // 2
    # Rows [0, half): fired 48h1m .. 72h ago (delete). Rows [half, N): 3h .. 47h ago (archive).
    fired = (
        "IF(n < %(half)s,"
        " %(now)s - INTERVAL (48*3600 + 60 + FLOOR(n * (24*3600 - 60) / %(half)s)) SECOND,"
        " %(now)s - INTERVAL (3*3600 + FLOOR((n - %(half)s) * 44*3600 / %(half)s)) SECOND)"
    )
    params = {"now": to_db(now), "half": half}
    for base in range(0, events, CHUNK):
        started = time.perf_counter()
        await db.execute(
            "INSERT INTO event_logs (id, trigger_id, trigger_name, trigger_type, source,"
            " is_test_run, payload, delivery, scheduled_for, fired_at, published_at,"
            " execution_status, attempts, response_status, delivered_at, retention_status,"
            " created_at)"
            f" SELECT {EVENT_ID}, {TRIGGER_ID}, 'bench trigger',"
            " 'interval_scheduled', 'scheduler', 0,"
            ' CONCAT(\'{"order": \', n, \', "customer": "c-\', n %% 977, \'", "amount": 12.5}\'),'
            ' \'{"endpoint": "http://sink.internal/hook", "http_method": "POST"}\','
            f" {fired}, {fired}, {fired},"
            " IF(n %% 100 = 7, 'retrying', 'success'), 1, IF(n %% 100 = 7, 503, 200),"
            f" IF(n %% 100 = 7, NULL, {fired}), 'active', {fired}"
            f" FROM ({_NUMBERS}) s WHERE n < %(events)s",
            {**params, "base": base, "events": events},
        )
        await db.execute(
            "INSERT INTO delivery_attempts (event_id, attempt, started_at, finished_at,"
            " response_status, latency_ms)"
            f" SELECT {EVENT_ID}, 1, %(now)s, %(now)s, 200, 42"
            f" FROM ({_NUMBERS}) s WHERE n < %(events)s",
            {**params, "base": base, "events": events},
        )
        await db.execute(
            "INSERT INTO idempotency_keys (trigger_id, idempotency_key, event_id, created_at)"
            f" SELECT {TRIGGER_ID}, CONCAT('key-', n), {EVENT_ID},"
            f" {fired} FROM ({_NUMBERS}) s WHERE n < %(events)s AND n %% 10 = 3",
            {**params, "base": base, "events": events},
        )
        print(f"  seeded {min(base + CHUNK, events):>9,} events"
              f" ({time.perf_counter() - started:.1f}s)", flush=True)  # fmt: skip
    await db.execute(
        "INSERT INTO triggers (id, name, type, status, config, created_at, updated_at)"
        f" SELECT {TRIGGER_ROW_ID}, CONCAT('bench ', n), 'interval_scheduled',"
        " 'active', '{}', %(now)s, %(now)s FROM (" + _NUMBERS + ") s WHERE n < %(count)s",
        {**params, "base": 0, "count": TRIGGERS},
    )
    await db.execute(
        "INSERT INTO trigger_schedules (trigger_id, scheduled_for, fire_at, status, created_at,"
        f" updated_at) SELECT {TRIGGER_ID}, {SCHEDULE_TIME}, {SCHEDULE_TIME}, 'completed',"
        f" {SCHEDULE_TIME}, {SCHEDULE_TIME} FROM (" + _NUMBERS + ") s WHERE n < %(count)s",
        {**params, "base": 0, "count": TRIGGERS * SCHEDULES_PER_TRIGGER},
    )
    await db.execute("DROP TABLE bench_digits")
    await db.execute("ANALYZE TABLE event_logs, delivery_attempts, idempotency_keys")


async def time_gauges(db: Database, label: str) -> None:
    metrics = Metrics()
    refresher = GaugeRefresher(db, metrics)
    timings: dict[str, float] = {}
    started = time.perf_counter()
    await refresher.refresh(on_query=lambda name, secs: timings.__setitem__(name, secs))
    total = time.perf_counter() - started
    parts = ", ".join(f"{name} {secs * 1000:.0f}ms" for name, secs in timings.items())
    print(f"gauge refresh ({label}): {total * 1000:.0f} ms total ({parts})")
    gauges = {
        status: int(metrics.registry.get_sample_value("triggerd_events",
                                                      {"retention_status": status}) or 0)
        for status in RETENTION_STATUSES
    }  # fmt: skip
    estimate = await RowCounts(db).estimate_events()
    started = time.perf_counter()
    rows = await db.fetchall(
        "SELECT retention_status, COUNT(*) AS n FROM event_logs GROUP BY retention_status"
    )
    took = time.perf_counter() - started
    exact = {r["retention_status"]: int(r["n"]) for r in rows}
    total = sum(exact.values())
    error = f"{(estimate - total) / total:+.1%}" if total else "n/a"
    print(f"  exact grouped COUNT {took * 1000:.0f} ms: {exact};"
          f" gauge: {gauges}; row estimate {estimate:,} ({error})")  # fmt: skip


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--batch-size", type=int, default=5000)
    parser.add_argument("--buffer-pool-mb", type=int, default=2048)
    parser.add_argument("--redo-log-mb", type=int, default=2048)
    parser.add_argument("--keep", action="store_true", help="leave the server's data dir")
    args = parser.parse_args()
    print(describe())

    server = MariaDBServer()
    await asyncio.to_thread(server.start)
    print(f"private MariaDB on port {server.port} ({server.base_dir})")
    db = Database(DatabaseUrl.parse(server.create_database("bench")), pool_size=4)
    await db.connect()
    try:
        # devstack starts MariaDB for development: a 256 MB buffer pool and a 96 MB redo
        # log. 1M events take ~1.2 GB, and retention is write-heavy (a small redo log
        # makes InnoDB stall on checkpoints every few thousand rows). Size the server like
        # a production one (both settings are dynamic in MariaDB >= 10.9).
        await db.execute(f"SET GLOBAL innodb_buffer_pool_size = {args.buffer_pool_mb << 20}")
        await db.execute(f"SET GLOBAL innodb_log_file_size = {args.redo_log_mb << 20}")
        sizes = await db.fetchone(
            "SELECT @@innodb_buffer_pool_size AS pool, @@innodb_log_file_size AS redo"
        )
        assert sizes is not None
        print(f"innodb_buffer_pool_size {int(sizes['pool']) >> 20} MB,"
              f" innodb_log_file_size {int(sizes['redo']) >> 20} MB")  # fmt: skip
        await migrate(db)
        started = time.perf_counter()
        await seed(db, args.events)
        print(f"seeded {args.events:,} events + attempts in {time.perf_counter() - started:.1f}s")
        await time_gauges(db, f"{args.events:,} events before the pass")

        durations: dict[str, list[float]] = defaultdict(list)
        store = RetentionStore(db, on_statement=lambda name, s: durations[name].append(s))
        windows = Windows(ARCHIVE_AFTER, DELETE_AFTER, args.batch_size)
        result = await run_pass(store, windows, budget=3600.0)
        print(
            f"retention pass: {result.seconds:.1f}s, batch size {args.batch_size},"
            f" {result.batches} batches, complete={result.complete}\n"
            f"  deleted {result.deleted:,} events, {result.attempts_deleted:,} attempts,"
            f" {result.keys_deleted:,} idempotency keys; archived {result.archived:,};"
            f" schedule rows purged {result.schedules_deleted:,}"
        )
        print(f"  {'statement':<20} {'count':>6} {'total s':>8} {'median ms':>10}"
              f" {'p99 ms':>8} {'max ms':>8}")  # fmt: skip
        for name, values in durations.items():
            values.sort()
            p99 = values[max(0, int(len(values) * 0.99) - 1)]
            print(f"  {name:<20} {len(values):>6} {sum(values):>8.1f}"
                  f" {statistics.median(values) * 1000:>10.1f} {p99 * 1000:>8.1f}"
                  f" {values[-1] * 1000:>8.1f}")  # fmt: skip
        longest = max((max(v), n) for n, v in durations.items())
        print(f"longest single statement: {longest[0] * 1000:.0f} ms ({longest[1]})")
        rows = await db.fetchall(
            "SELECT retention_status, execution_status, COUNT(*) AS n FROM event_logs"
            " GROUP BY retention_status, execution_status"
        )
        print("left:", ", ".join(f"{r['retention_status']}/{r['execution_status']}={r['n']:,}"
                                 for r in rows))  # fmt: skip
        await time_gauges(db, "after the pass")
        again = await run_pass(store, windows, now=utcnow() + timedelta(seconds=1))
        print(f"second pass (nothing due): {again.seconds * 1000:.0f} ms, {again.batches} batches")
        ok = result.seconds < 60 and longest[0] < 0.5
        print("aims met" if ok else "AIMS MISSED (pass < 60 s, statements < 500 ms)")
        return 0
    finally:
        await db.close()
        if args.keep:
            server.stop()
            print(f"data dir kept: {server.base_dir}")
        else:
            await asyncio.to_thread(server.close)


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
