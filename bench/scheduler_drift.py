"""Scheduler drift benchmark: how late does a due occurrence reach Kafka?

    python bench/scheduler_drift.py [--triggers 100000] [--burst 10000] [--seconds 120]
                                    [--jitter 30]

Starts its own private MariaDB and broker (triggerd.devstack), migrates, and inserts
`--triggers` active triggers with multi-row INSERTs: half `S * * * * *` crons (S = i mod
60), half 60 s intervals whose first run is spread over the minute at millisecond
offsets, so ~N/60 occurrences fall due every second; plus `--burst` one-time triggers
all due at the same instant half-way through the measurement.

Then `triggerd run --roles scheduler` runs as a subprocess (so its peak RSS is its own,
read from /proc) and a consumer in this process reads the job topic. Publish delay =
Kafka record timestamp (producer CreateTime) − fire_at (scheduled_for, plus the trigger's
jitter with --jitter, which sets it on every other spread trigger). Reported: p50/p99/max of
the spread load (the seconds around the burst excluded and reported apart), fires/s, the
burst (delay of its jobs; the last one is "last published after due"), peak RSS.

In the same run the spread load is scheduled on APScheduler 3's AsyncIOScheduler in
memory (a subprocess of this script; `pip install 'APScheduler>=3.10,<4'`), measuring
callback time − scheduled time the same way, and the ratio of the p99s is printed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from machine import cpu_seconds, describe  # noqa: E402  (bench/machine.py, beside this script)

from triggerd.devstack import KafkaBroker, MariaDBServer, free_port  # noqa: E402

ENDPOINT = "http://127.0.0.1:9/hook"
INTERVAL = 60  # seconds: the period of every spread trigger


def iso(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


def db_naive(when: datetime) -> datetime:
    return when.astimezone(UTC).replace(tzinfo=None)


def db_time(when: datetime) -> str:
    return db_naive(when).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def summary(delays_ms: list[float]) -> str:
    worst = max(delays_ms, default=float("nan"))
    return (f"n={len(delays_ms)}  p50={pct(delays_ms, 0.50):.1f} ms  "
            f"p99={pct(delays_ms, 0.99):.1f} ms  max={worst:.1f} ms")  # fmt: skip


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


# --------------------------------------------------------------------- data


def spread_schedule(n: int, start: datetime, jitter: float = 0.0
                    ) -> list[tuple[str, dict[str, Any], datetime]]:  # fmt: skip
    """(type, config, first occurrence) of the spread load; the first occurrences all
    fall in the minute from `start`. With `jitter`, every other trigger has that
    jitter_seconds."""
    out: list[tuple[str, dict[str, Any], datetime]] = []
    base = start.replace(microsecond=0)
    n_cron = n // 2
    n_interval = n - n_cron
    for i in range(n_cron):
        second = i % 60
        first = base + timedelta(seconds=(second - base.second) % 60)
        if first < start:
            first += timedelta(seconds=60)
        cfg: dict[str, Any] = {"cron": f"{second} * * * * *", "timezone": "UTC",
                               "endpoint": ENDPOINT, "payload": {"n": i}}  # fmt: skip
        if jitter and i % 2:
            cfg["jitter_seconds"] = jitter
        out.append(("cron_scheduled", cfg, first))
    for j in range(n_interval):
        first = base + timedelta(seconds=1, milliseconds=(j * INTERVAL * 1000) // n_interval)
        cfg = {"interval_seconds": INTERVAL, "first_run_at": iso(first), "endpoint": ENDPOINT,
               "payload": {"n": j}}  # fmt: skip
        if jitter and j % 2:
            cfg["jitter_seconds"] = jitter
        out.append(("interval_scheduled", cfg, first))
    return out


def insert_all(url: str, rows: list[tuple[str, dict[str, Any], datetime]]) -> dict[str, int]:
    """Multi-row INSERTs of 5,000 rows, the statement text built here (the values are
    generated, so escaping the JSON is all it takes: far cheaper than executemany's
    per-value escaping). Returns the jitter (ms) of each trigger that has some."""
    import pymysql.converters

    from triggerd.config import DatabaseUrl
    from triggerd.domain.occurrences import due_at, jitter_ms

    u = DatabaseUrl.parse(url)
    conn = pymysql.connect(host=u.host, port=u.port, user=u.user, password=u.password,
                           database=u.database, autocommit=True)  # fmt: skip
    now = db_naive(datetime.now(UTC)).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
    jitters: dict[str, int] = {}
    try:
        with conn.cursor() as cur:
            cur.execute("SET SESSION unique_checks = 0")  # generated ids are unique
            for start in range(0, len(rows), 5000):
                chunk = rows[start : start + 5000]
                ids = [str(uuid.uuid4()) for _ in chunk]
                triggers = ",".join(
                    f"('{tid}','bench-{tid[:8]}','{typ}','active',"
                    f"'{pymysql.converters.escape_string(json.dumps(cfg))}',1,'{now}','{now}')"
                    for tid, (typ, cfg, _) in zip(ids, chunk, strict=True)
                )
                cur.execute("INSERT INTO triggers (id, name, type, status, config, version,"
                            f" created_at, updated_at) VALUES {triggers}")  # fmt: skip
                occurrences = ",".join(
                    f"('{tid}','{db_time(first)}','{db_time(due_at(tid, cfg, first).fire_at)}',"
                    f"'pending','{now}','{now}')"
                    for tid, (_, cfg, first) in zip(ids, chunk, strict=True)
                )
                jitters.update((tid, jitter_ms(cfg)) for tid, (_, cfg, _) in
                               zip(ids, chunk, strict=True) if jitter_ms(cfg))  # fmt: skip
                cur.execute("INSERT INTO trigger_schedules (trigger_id, scheduled_for, fire_at,"
                            f" status, created_at, updated_at) VALUES {occurrences}")  # fmt: skip
    finally:
        conn.close()
    return jitters


async def migrate(url: str) -> None:
    from triggerd.config import DatabaseUrl
    from triggerd.store.db import Database
    from triggerd.store.migrations import migrate as run_migrations

    db = Database(DatabaseUrl.parse(url), pool_size=2)  # migrate holds a lock on one
    await db.connect()
    try:
        await run_migrations(db)
    finally:
        await db.close()


# ----------------------------------------------------------------- triggerd


async def consume(bootstrap: str, topic: str, out: list[tuple[int, int, str]],
                  stop: asyncio.Event, jitters: dict[str, int]) -> None:  # fmt: skip
    """(due ms, Kafka timestamp ms, type) of every job: due is fire_at, the time the
    occurrence was to be published (scheduled_for plus the trigger's jitter)."""
    import orjson
    from aiokafka import AIOKafkaConsumer

    from triggerd.domain.occurrences import jitter_offset

    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=None,
                                auto_offset_reset="earliest", enable_auto_commit=False,
                                max_poll_records=5000)  # fmt: skip
    await consumer.start()
    try:
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=200)
            for records in batch.values():
                for record in records:
                    job = orjson.loads(record.value)
                    due = datetime.fromisoformat(job["scheduled_for"].replace("Z", "+00:00"))
                    jitter = jitters.get(job["trigger_id"] or "", 0)
                    if jitter:
                        due += jitter_offset(job["trigger_id"], due, jitter)
                    out.append((int(due.timestamp() * 1000), record.timestamp, job["type"]))
    finally:
        await consumer.stop()


async def run_triggerd(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    mariadb, broker = MariaDBServer(), KafkaBroker()
    await asyncio.to_thread(mariadb.start)
    await asyncio.to_thread(broker.start)
    scheduler: subprocess.Popen[bytes] | None = None
    try:
        url = await asyncio.to_thread(mariadb.create_database, "bench")
        await migrate(url)
        loading = time.monotonic()
        lead = 15 + args.triggers / 20_000  # the inserts and the start-up happen meanwhile
        start = datetime.now(UTC) + timedelta(seconds=lead)
        rows = spread_schedule(args.triggers, start, args.jitter)
        measure_from = start + timedelta(seconds=INTERVAL / 2)  # after a warm-up
        measure_to = measure_from + timedelta(seconds=args.seconds)
        burst_at = (measure_from + timedelta(seconds=args.seconds / 2)).replace(microsecond=0)
        rows += [("time_scheduled", {"run_at": iso(burst_at), "timezone": "UTC",
                  "endpoint": ENDPOINT, "payload": {"burst": k}}, burst_at)
                 for k in range(args.burst)]  # fmt: skip
        jitters = await asyncio.to_thread(insert_all, url, rows)
        print(f"inserted {args.triggers} spread + {args.burst} burst triggers "
              f"in {time.monotonic() - loading:.1f}s", flush=True)  # fmt: skip
        del rows

        port, topic = free_port(), "bench-jobs"
        env = {**os.environ, "TRIGGERD_DATABASE_URL": url, "TRIGGERD_KAFKA_BOOTSTRAP":
               broker.bootstrap, "TRIGGERD_KAFKA_TOPIC": topic, "TRIGGERD_HTTP_PORT": str(port),
               "TRIGGERD_LOG_LEVEL": "warning", "TRIGGERD_LOG_FORMAT": "text"}  # fmt: skip
        log_path = work / "scheduler.log"
        with open(log_path, "wb") as log:
            profile = ["-m", "cProfile", "-o", args.profile] if args.profile else []
            entry = ["-m", "triggerd"]
            if args.gc_threshold:  # the daemon as is, but for its collector's first threshold
                entry = ["-c", f"import gc, sys; gc.set_threshold({args.gc_threshold}, 10, 10); "
                         "from triggerd.cli import main; sys.exit(main())"]  # fmt: skip
            scheduler = subprocess.Popen(
                [sys.executable, *profile, *entry, "run", "--roles", "scheduler"],
                env=env, stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        await wait_healthy(port, scheduler)
        if datetime.now(UTC) > start:
            print("warning: start-up took longer than the lead; the first occurrences were late")
        jobs: list[tuple[int, int, str]] = []
        stop = asyncio.Event()
        reader = asyncio.create_task(consume(broker.bootstrap, topic, jobs, stop, jitters))
        await asyncio.sleep(max(0.0, (measure_from - datetime.now(UTC)).total_seconds()))
        cpu_from = cpu_seconds(scheduler.pid)
        await asyncio.sleep((measure_to - datetime.now(UTC)).total_seconds())
        cpu = (cpu_seconds(scheduler.pid) - cpu_from) / args.seconds
        await asyncio.sleep(3)
        rss = peak_rss_mb(scheduler.pid)
        stop.set()
        await reader
        scheduler.terminate()
        await asyncio.to_thread(scheduler.wait, 30)
        errors = [line for line in log_path.read_text(errors="replace").splitlines()
                  if "ERROR" in line or "Traceback" in line]  # fmt: skip
    finally:
        if scheduler is not None and scheduler.poll() is None:
            scheduler.kill()
        broker.close()
        mariadb.close()

    if args.dump:
        Path(args.dump).write_text(json.dumps({"jobs": jobs, "from": measure_from.timestamp(),
                                               "burst": burst_at.timestamp()}))  # fmt: skip
    lo, hi = int(measure_from.timestamp() * 1000), int(measure_to.timestamp() * 1000)
    b = int(burst_at.timestamp() * 1000)
    in_window = [(due, ts, typ) for due, ts, typ in jobs if lo <= due < hi]
    near_burst = [ts - due for due, ts, typ in in_window
                  if typ != "time_scheduled" and b - 1000 <= due < b + 2000]  # fmt: skip
    spread = [ts - due for due, ts, typ in in_window
              if typ != "time_scheduled" and not b - 1000 <= due < b + 2000]  # fmt: skip
    burst = [ts - due for due, ts, typ in jobs if typ == "time_scheduled"]
    return {"spread": spread, "near_burst": near_burst, "burst": burst, "rss": rss, "cpu": cpu,
            "fires_per_s": len([j for j in in_window if j[2] != "time_scheduled"]) / args.seconds,
            "errors": errors[:5]}  # fmt: skip


async def wait_healthy(port: int, proc: subprocess.Popen[bytes], timeout: float = 120) -> None:
    import aiohttp

    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise SystemExit(f"scheduler exited with {proc.returncode}")
            try:
                async with http.get(f"http://127.0.0.1:{port}/health") as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.2)
    raise SystemExit("scheduler did not become healthy")


# ---------------------------------------------------------------- APScheduler


async def apscheduler_child(n: int, seconds: float) -> None:
    """Runs in a subprocess: the spread load on AsyncIOScheduler; prints JSON stats."""
    from apscheduler.schedulers.asyncio import AsyncIOScheduler

    delays: list[float] = []
    start = datetime.now(UTC) + timedelta(seconds=10 + n / 20_000)
    measure_from = start + timedelta(seconds=INTERVAL / 2)
    measure_to = measure_from + timedelta(seconds=seconds)
    lo, hi = measure_from.timestamp(), measure_to.timestamp()

    async def cron_job(second: int) -> None:
        now = time.time()
        whole = int(now)
        due = whole - (whole % 60 - second) % 60
        if lo <= due < hi:
            delays.append((now - due) * 1000)

    async def interval_job(first: float) -> None:
        now = time.time()
        due = first + ((now - first) // INTERVAL) * INTERVAL
        if lo <= due < hi:
            delays.append((now - due) * 1000)

    sched = AsyncIOScheduler(timezone="UTC", job_defaults={
        "misfire_grace_time": None, "coalesce": False, "max_instances": 10})  # fmt: skip
    for typ, cfg, first in spread_schedule(n, start):
        if typ == "cron_scheduled":
            second = int(cfg["cron"].split()[0])
            sched.add_job(cron_job, "cron", second=second, args=[second])
        else:
            sched.add_job(interval_job, "interval", seconds=INTERVAL, start_date=first,
                          args=[first.timestamp()])  # fmt: skip
    sched.start()
    await asyncio.sleep((measure_to - datetime.now(UTC)).total_seconds() + 3)
    sched.shutdown(wait=False)
    print(json.dumps({"delays": delays, "rss": peak_rss_mb(os.getpid())}))


def run_apscheduler(args: argparse.Namespace) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, __file__, "--apscheduler-child", "--triggers", str(args.triggers),
         "--seconds", str(args.seconds)],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    data: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return data


# ---------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--triggers", type=int, default=100_000)
    parser.add_argument("--burst", type=int, default=10_000)
    parser.add_argument("--seconds", type=float, default=120)
    parser.add_argument("--skip-apscheduler", action="store_true")
    parser.add_argument("--jitter", type=float, default=0.0,
                        help="jitter_seconds of every other spread trigger (below 60)")
    parser.add_argument("--gc-threshold", type=int, default=0,
                        help="run the scheduler with gc.set_threshold(N, 10, 10) (default: "
                             "Python's 700)")  # fmt: skip
    parser.add_argument("--profile", help="write a cProfile of the scheduler process here")
    parser.add_argument("--dump", help="write every job's (due ms, Kafka timestamp, type) here")
    parser.add_argument("--apscheduler-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.apscheduler_child:
        asyncio.run(apscheduler_child(args.triggers, args.seconds))
        return

    print(f"scheduler drift: {args.triggers} triggers (~{args.triggers // INTERVAL}/s), "
          f"burst {args.burst}, {args.seconds:g}s measured", flush=True)  # fmt: skip
    print(describe(), flush=True)
    with tempfile.TemporaryDirectory(prefix="triggerd-bench-") as work:
        ours = asyncio.run(run_triggerd(args, Path(work)))
    print("triggerd (scheduler role, publish delay = Kafka record timestamp - fire_at)"
          + (f", jitter {args.jitter:g} s on half the triggers" if args.jitter else ""))
    print(f"  spread load        {summary(ours['spread'])}  ({ours['fires_per_s']:.0f} fires/s)")
    print(f"  spread near burst  {summary(ours['near_burst'])}")
    burst = ours["burst"]
    print(f"  burst {args.burst:>6}       {summary(burst)}")
    print(f"  burst: {len(burst)}/{args.burst} published, last "
          f"{max(burst, default=float('nan')):.0f} ms after due")  # fmt: skip
    print(f"  CPU                {100 * ours['cpu']:.0f}% of a core over the measured"
          " seconds (the burst included)")
    print(f"  peak RSS           {ours['rss']:.0f} MB"
          + (f"  (gc threshold {args.gc_threshold})" if args.gc_threshold else ""))
    for line in ours["errors"]:
        print(f"  log: {line}")
    if args.skip_apscheduler:
        return
    theirs = run_apscheduler(args)
    print("APScheduler 3 AsyncIOScheduler (in memory, callback time - scheduled time)")
    print(f"  spread load        {summary(theirs['delays'])}")
    print(f"  peak RSS           {theirs['rss']:.0f} MB")
    ratio = pct(ours["spread"], 0.99) / max(pct(theirs["delays"], 0.99), 1e-9)
    print(f"p99 ratio triggerd / APScheduler: {ratio:.2f}")


if __name__ == "__main__":
    main()
