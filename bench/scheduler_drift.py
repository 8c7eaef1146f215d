"""Scheduler drift benchmark: how late does a due occurrence reach Kafka?

    python bench/scheduler_drift.py [--triggers 100000] [--burst 10000] [--seconds 120]
                                    [--jitter 30] [--mix spread|interval|million]
                                    [--api-create N] [--api-connections 32]
                                    [--api-processes 1] [--profile FILE] [--log FILE]

Starts its own private MariaDB and broker (triggerd.devstack), migrates, and inserts
`--triggers` active triggers with multi-row INSERTs. `--mix spread` (the default): half
`S * * * * *` crons (S = i mod 60), half 60 s intervals whose first run is spread over
the minute at millisecond offsets, so ~N/60 occurrences fall due every second.
`--mix interval`: all 60 s intervals. `--mix million`: a tenth of the triggers as
`spread` (~N/600 a second), the rest half hourly crons (`S M * * * *`) spread over the
hour and half daily intervals spread over the day: at 1,000,000 triggers ~1,800
firings a second over a million pending rows. Plus `--burst` one-time triggers all due
at the same instant half-way through the measurement.

Then `triggerd run --roles scheduler` runs as a subprocess (so its peak RSS is its own,
read from /proc), launched when the first rows fall due, and a consumer in this process
reads the job topic. Publish delay = Kafka record timestamp (producer CreateTime) −
fire_at (scheduled_for, plus the trigger's jitter with --jitter, which sets it on every
other spread trigger). Reported: p50/p99/max of the spread load (the seconds of the
burst, until 1 s after its last job, excluded and reported apart), fires/s, the burst
(the delay of its last job is "last published after due"), start-up (health and first
job published, from the launch), CPU of the scheduler, MariaDB and the broker (steady:
the window before the burst), the reconcile read (the scheduler's
`due_points` statements timed on a connection of this script at the start of the window,
round trip included: its cost per pass; with --profile also its share of the
scheduler's profile), peak RSS.

With `--api-create N`, once the scheduler stopped, `--api-processes` `triggerd run
--roles api` processes on the same database take N POST /api/v1/triggers from a
closed-loop client (bench/lean_http.py) over `--api-connections` connections:
triggers/s, latency, CPU.

With `--mix spread`, the spread load is also scheduled on APScheduler 3's
AsyncIOScheduler in memory (a subprocess of this script; `pip install
'APScheduler>=3.10,<4'`), measuring callback time − scheduled time the same way, and the
ratio of the p99s is printed. APScheduler 4 on PostgreSQL: bench/apscheduler_peer.py.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta
from itertools import islice
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from machine import cpu_seconds, describe  # noqa: E402  (bench/machine.py, beside this script)

from triggerd.devstack import KafkaBroker, MariaDBServer, free_port  # noqa: E402
from triggerd.scheduler.loop import MAX_CLAIM_AHEAD, MAX_LEAD  # noqa: E402
from triggerd.scheduler.reconcile import FAR_EVERY  # noqa: E402

ENDPOINT = "http://127.0.0.1:9/hook"
# Through the API a destination must be public; it is never called (nothing fires).
API_ENDPOINT = "https://hooks.example.com/bench"
INTERVAL = 60  # seconds: the period of every spread trigger
DAY = 86_400


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


def spread_schedule(n: int, start: datetime, jitter: float = 0.0, mix: str = "spread"
                    ) -> Iterator[tuple[str, dict[str, Any], datetime]]:  # fmt: skip
    """(type, config, first occurrence) of the load, generated (a million rows do not
    sit in a list). `spread`: half per-second crons, half 60 s intervals, all first
    falling due in the minute from `start`. `interval`: all 60 s intervals, spread the
    same way. `million`: a tenth as `spread` (~n/600 fires/s), the rest half hourly crons
    (`S M * * * *`) spread over the hour and half daily intervals spread over the day
    from `start`. With `jitter`, every other minute trigger has that jitter_seconds."""
    base = start.replace(microsecond=0)
    minute = n // 10 if mix == "million" else n
    n_cron = 0 if mix == "interval" else minute // 2
    n_interval = minute - n_cron
    for i in range(n_cron):
        second = i % 60
        first = base + timedelta(seconds=(second - base.second) % 60)
        if first < start:
            first += timedelta(seconds=60)
        cfg: dict[str, Any] = {"cron": f"{second} * * * * *", "timezone": "UTC",
                               "endpoint": ENDPOINT, "payload": {"n": i}}  # fmt: skip
        if jitter and i % 2:
            cfg["jitter_seconds"] = jitter
        yield "cron_scheduled", cfg, first
    yield from _intervals(n_interval, INTERVAL, base, jitter)
    if mix != "million":
        return
    rest = n - minute
    n_hourly = rest // 2
    for i in range(n_hourly):
        offset = 1 + (i * 3600) // n_hourly  # seconds into the hour from `start`
        first = base + timedelta(seconds=offset)  # within the hour: the cron's next match
        cfg = {"cron": f"{first.second} {first.minute} * * * *", "timezone": "UTC",
               "endpoint": ENDPOINT, "payload": {"h": i}}  # fmt: skip
        yield "cron_scheduled", cfg, first
    yield from _intervals(rest - n_hourly, DAY, base, 0.0)


def _intervals(n: int, period: int, base: datetime, jitter: float
               ) -> Iterator[tuple[str, dict[str, Any], datetime]]:  # fmt: skip
    """`n` intervals of `period` seconds whose first runs are spread over one period
    from a second after `base`, at millisecond offsets."""
    for j in range(n):
        first = base + timedelta(seconds=1, milliseconds=(j * period * 1000) // n)
        cfg: dict[str, Any] = {"interval_seconds": period, "first_run_at": iso(first),
                               "endpoint": ENDPOINT, "payload": {"n": j}}  # fmt: skip
        if jitter and j % 2:
            cfg["jitter_seconds"] = jitter
        yield "interval_scheduled", cfg, first


def insert_all(url: str, rows: Iterable[tuple[str, dict[str, Any], datetime]]) -> dict[str, int]:
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
            cur.execute("SET SESSION foreign_key_checks = 0")  # every parent row goes first
            source = iter(rows)
            while chunk := list(islice(source, 5000)):
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
    result: dict[str, Any] = {}
    try:
        url = await asyncio.to_thread(mariadb.create_database, "bench")
        await migrate(url)
        loading = time.monotonic()
        # The inserts happen meanwhile (~14,000 rows/s on a quiet 2-core VM, a third of
        # that when it is busy); the scheduler is started at `start`, when the first rows
        # fall due.
        lead = 10 + (args.triggers + args.burst) / args.insert_rate
        start = datetime.now(UTC) + timedelta(seconds=lead)
        measure_from = start + timedelta(seconds=INTERVAL / 2)  # after a warm-up
        measure_to = measure_from + timedelta(seconds=args.seconds)
        burst_at = (measure_from + timedelta(seconds=args.seconds / 2)).replace(microsecond=0)
        burst = (("time_scheduled", {"run_at": iso(burst_at), "timezone": "UTC",
                  "endpoint": ENDPOINT, "payload": {"burst": k}}, burst_at)
                 for k in range(args.burst))  # fmt: skip
        rows = itertools.chain(spread_schedule(args.triggers, start, args.jitter, args.mix),
                               burst)  # fmt: skip
        jitters = await asyncio.to_thread(insert_all, url, rows)
        print(f"inserted {args.triggers} {args.mix} + {args.burst} burst triggers "
              f"in {time.monotonic() - loading:.1f}s", flush=True)  # fmt: skip
        if datetime.now(UTC) > start + timedelta(seconds=5):
            # The window and the burst are fixed in the rows: measuring now would measure
            # a catch-up after downtime, not the schedule.
            raise SystemExit(f"the inserts ran {datetime.now(UTC) - start} past the lead "
                             "(a busy machine?): run again with a lower --insert-rate")
        await asyncio.sleep(max(0.0, (start - datetime.now(UTC)).total_seconds()))

        port, topic = free_port(), "bench-jobs"
        env = {**os.environ, "TRIGGERD_DATABASE_URL": url, "TRIGGERD_KAFKA_BOOTSTRAP":
               broker.bootstrap, "TRIGGERD_KAFKA_TOPIC": topic, "TRIGGERD_HTTP_PORT": str(port),
               "TRIGGERD_LOG_LEVEL": "warning", "TRIGGERD_LOG_FORMAT": "text"}  # fmt: skip
        log_path = Path(args.log) if args.log else work / "scheduler.log"
        with open(log_path, "wb") as log:
            profile = ["-m", "cProfile", "-o", args.profile] if args.profile else []
            entry = ["-m", "triggerd"]
            if args.gc_threshold:  # the daemon as is, but for its collector's first threshold
                entry = ["-c", f"import gc, sys; gc.set_threshold({args.gc_threshold}, 10, 10); "
                         "from triggerd.cli import main; sys.exit(main())"]  # fmt: skip
            launched = time.time()
            scheduler = subprocess.Popen(
                [sys.executable, *profile, *entry, "run", "--roles", "scheduler"],
                env=env, stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        await wait_healthy(port, scheduler)
        result["ready_s"] = time.time() - launched
        jobs: list[tuple[int, int, str]] = []
        stop = asyncio.Event()
        reader = asyncio.create_task(consume(broker.bootstrap, topic, jobs, stop, jitters))
        pids = {"scheduler": scheduler.pid, "mariadb": _pid(mariadb.proc),
                "broker": _pid(broker.proc)}  # fmt: skip
        # CPU sampled at the window's edges and 1 s before the burst: steady state is the
        # window before the burst (the spread load queues behind a burst that takes long).
        quiet_to = burst_at - timedelta(seconds=1)
        samples: list[dict[str, float]] = []
        for mark in (measure_from, quiet_to, measure_to):
            await asyncio.sleep(max(0.0, (mark - datetime.now(UTC)).total_seconds()))
            samples.append({name: cpu_seconds(pid) for name, pid in pids.items()})
            if mark == measure_from:  # the reconcile read in steady state, ~3 s
                result["reconcile_ms"] = await time_reconcile(url)
        steady_s = max((quiet_to - measure_from).total_seconds(), 1.0)
        result["cpu"] = {name: (samples[2][name] - samples[0][name]) / args.seconds
                         for name in pids}  # fmt: skip
        result["cpu_steady"] = {name: (samples[1][name] - samples[0][name]) / steady_s
                                for name in pids}  # fmt: skip
        await asyncio.sleep(3)
        result["rss"] = peak_rss_mb(scheduler.pid)
        stop.set()
        await reader
        scheduler.terminate()
        await asyncio.to_thread(scheduler.wait, 30)
        result["errors"] = [line for line in log_path.read_text(errors="replace").splitlines()
                            if "ERROR" in line or "Traceback" in line][:5]  # fmt: skip
        if args.api_create:
            result["api"] = await api_create(args, env, work, pids["mariadb"])
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
    # The burst's seconds: from 1 s before it to 2 s after, or to 1 s after its last job
    # was published when it took longer (the spread load then queues behind it).
    burst_ts = [ts for _, ts, typ in jobs if typ == "time_scheduled"]
    drained = max(b + 2000, max(burst_ts, default=0) + 1000)
    in_window = [(due, ts, typ) for due, ts, typ in jobs if lo <= due < hi]
    near_burst = [ts - due for due, ts, typ in in_window
                  if typ != "time_scheduled" and b - 1000 <= due < drained]  # fmt: skip
    spread = [ts - due for due, ts, typ in in_window
              if typ != "time_scheduled" and not b - 1000 <= due < drained]  # fmt: skip
    result["burst_span_s"] = (drained - b + 1000) / 1000
    result["before_burst"] = [ts - due for due, ts, typ in in_window
                              if typ != "time_scheduled" and due < b - 1000]  # fmt: skip
    result["first_fire_s"] = min((ts for _, ts, _ in jobs), default=float("nan")) / 1000 - launched
    result.update(spread=spread, near_burst=near_burst,
                  burst=[ts - due for due, ts, typ in jobs if typ == "time_scheduled"],
                  fires_per_s=len([j for j in in_window if j[2] != "time_scheduled"])
                  / args.seconds)  # fmt: skip
    return result


def _pid(proc: subprocess.Popen[bytes] | None) -> int:
    assert proc is not None
    return proc.pid


async def time_reconcile(url: str, passes: int = 20) -> dict[str, list[float]]:
    """Wall time (ms) of the scheduler's reconcile reads (store.schedules.due_points, the
    same statements): over the near span (every reload) and over the whole span with the
    crowded seconds' leads (every FAR_EVERY), on its own connection while the scheduler
    runs: the server-side cost of one pass, round trip included."""
    from triggerd.config import DatabaseUrl, Settings
    from triggerd.scheduler.reconcile import window_span
    from triggerd.store import schedules
    from triggerd.store.db import Database

    span = window_span(Settings(), MAX_CLAIM_AHEAD, MAX_LEAD)
    near = window_span(Settings(), MAX_CLAIM_AHEAD)
    db = Database(DatabaseUrl.parse(url), pool_size=1)
    await db.connect()
    took: dict[str, list[float]] = {"near": [], "far": []}
    try:
        for _ in range(passes):
            for kind, reach in (("near", near), ("far", span)):
                began = time.perf_counter()
                now = datetime.now(UTC)
                await schedules.due_points(db, now + reach, now + near)
                took[kind].append((time.perf_counter() - began) * 1000)
                await asyncio.sleep(0.05)
    finally:
        await db.close()
    return took


async def api_create(args: argparse.Namespace, env: dict[str, str], work: Path,
                     mariadb_pid: int) -> dict[str, Any]:  # fmt: skip
    """`--api-create` triggers through POST /api/v1/triggers of `--api-processes` `api`
    processes on the same database (the million rows in it), from `--api-connections`
    keep-alive connections shared out among them, each connection sending its next
    request when the last was answered."""
    from lean_http import closed_loop

    ports = [free_port() for _ in range(args.api_processes)]
    apis: list[subprocess.Popen[bytes]] = []
    try:
        for n, port in enumerate(ports):
            with open(work / f"api-{n}.log", "wb") as log:
                profile = ["-m", "cProfile", "-o", f"{args.profile}.api{n}"] if args.profile else []
                apis.append(subprocess.Popen(
                    [sys.executable, *profile, "-m", "triggerd", "run", "--roles", "api"],
                    env={**env, "TRIGGERD_HTTP_PORT": str(port)}, stdout=log,
                    stderr=subprocess.STDOUT,
                ))  # fmt: skip
        for port, api in zip(ports, apis, strict=True):
            await wait_healthy(port, api)
        start_at = iso(datetime.now(UTC) + timedelta(days=1))

        def body(k: int) -> bytes:
            return json.dumps({"name": f"api-{k}", "type": "interval_scheduled", "config": {
                "interval_seconds": 3600, "start_at": start_at, "endpoint": API_ENDPOINT,
                "payload": {"k": k}}}).encode()  # fmt: skip

        pids = [api.pid for api in apis] + [mariadb_pid, os.getpid()]
        cpu_from = [cpu_seconds(pid) for pid in pids]
        began = time.monotonic()
        latencies, statuses = await closed_loop("127.0.0.1", ports, "/api/v1/triggers", body,
                                                args.api_create, args.api_connections)  # fmt: skip
        took = time.monotonic() - began
        cpu = [(cpu_seconds(pid) - used) / took for pid, used in zip(pids, cpu_from, strict=True)]
    finally:
        for api in apis:
            api.terminate()
        for api in apis:
            await asyncio.to_thread(api.wait, 30)
    return {"n": args.api_create, "seconds": took, "created": statuses.get(201, 0),
            "statuses": statuses, "latencies": latencies, "cpu_api": sum(cpu[:-2]),
            "cpu_mariadb": cpu[-2], "cpu_client": cpu[-1]}  # fmt: skip


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
    parser.add_argument("--mix", choices=["spread", "interval", "million"], default="spread",
                        help="spread: half per-second crons, half 60 s intervals; interval: "
                             "all 60 s intervals; million: a tenth as spread, the rest hourly "
                             "crons and daily intervals")  # fmt: skip
    parser.add_argument("--burst", type=int, default=10_000)
    parser.add_argument("--seconds", type=float, default=120)
    parser.add_argument("--skip-apscheduler", action="store_true")
    parser.add_argument("--jitter", type=float, default=0.0,
                        help="jitter_seconds of every other spread trigger (below 60)")
    parser.add_argument("--api-create", type=int, default=0,
                        help="afterwards, create this many triggers through the HTTP API")
    parser.add_argument("--insert-rate", type=float, default=8000,
                        help="rows/s the lead before the first occurrences allows for")
    parser.add_argument("--api-connections", type=int, default=32)
    parser.add_argument("--api-processes", type=int, default=1,
                        help="api processes the connections are shared among")  # fmt: skip
    parser.add_argument("--gc-threshold", type=int, default=0,
                        help="run the scheduler with gc.set_threshold(N, 10, 10) (default: "
                             "Python's 700)")  # fmt: skip
    parser.add_argument("--profile", help="write a cProfile of the scheduler process here")
    parser.add_argument("--log", help="keep the scheduler's log here")
    parser.add_argument("--dump", help="write every job's (due ms, Kafka timestamp, type) here")
    parser.add_argument("--apscheduler-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.apscheduler_child:
        asyncio.run(apscheduler_child(args.triggers, args.seconds))
        return

    per_s = args.triggers / INTERVAL
    if args.mix == "million":
        per_s = args.triggers / 10 / INTERVAL + args.triggers * 0.45 * (1 / 3600 + 1 / DAY)
    print(f"scheduler drift: {args.triggers} triggers, mix {args.mix} (~{per_s:.0f} fires/s), "
          f"burst {args.burst}, {args.seconds:g}s measured", flush=True)  # fmt: skip
    print(describe(), flush=True)
    with tempfile.TemporaryDirectory(prefix="triggerd-bench-") as work:
        ours = asyncio.run(run_triggerd(args, Path(work)))
    report(args, ours)
    if args.skip_apscheduler or args.mix != "spread":
        return
    theirs = run_apscheduler(args)
    print("APScheduler 3 AsyncIOScheduler (in memory, callback time - scheduled time)")
    print(f"  spread load        {summary(theirs['delays'])}")
    print(f"  peak RSS           {theirs['rss']:.0f} MB")
    ratio = pct(ours["spread"], 0.99) / max(pct(theirs["delays"], 0.99), 1e-9)
    print(f"p99 ratio triggerd / APScheduler: {ratio:.2f}")


def report(args: argparse.Namespace, ours: dict[str, Any]) -> None:
    print("triggerd (scheduler role, publish delay = Kafka record timestamp - fire_at)"
          + (f", jitter {args.jitter:g} s on half the triggers" if args.jitter else ""))
    print(f"  spread load        {summary(ours['spread'])}  ({ours['fires_per_s']:.0f} fires/s)")
    print(f"    before the burst {summary(ours['before_burst'])}")
    print(f"  spread near burst  {summary(ours['near_burst'])}  (due in the "
          f"{ours['burst_span_s']:.0f} s from 1 s before the burst to 1 s after its last job)")
    burst = ours["burst"]
    print(f"  burst {args.burst:>6}       {summary(burst)}")
    print(f"  burst: {len(burst)}/{args.burst} published, last "
          f"{max(burst, default=float('nan')):.0f} ms after due")  # fmt: skip
    print(f"  start-up           healthy {ours['ready_s']:.1f} s after launch, first job "
          f"published {ours['first_fire_s']:.1f} s after launch (rows due from launch)")
    cpu, steady = ours["cpu"], ours["cpu_steady"]
    print("  CPU, % of a core   " + ", ".join(
        f"{name} {100 * steady[name]:.0f} before the burst / {100 * cpu[name]:.0f} in all"
        for name in cpu))  # fmt: skip
    near, far = ours["reconcile_ms"]["near"], ours["reconcile_ms"]["far"]
    per_second = ((FAR_EVERY - 1) * pct(near, 0.5) + pct(far, 0.5)) / FAR_EVERY  # ms
    print(f"  reconcile read     p50 {pct(near, 0.5):.1f} ms (max {max(near):.1f}) per pass, "
          f"with the leads' span {pct(far, 0.5):.1f} ms (max {max(far):.1f}) every "
          f"{FAR_EVERY:.0f} s ({len(near)} passes each; once a second by default: "
          f"{per_second / 10:.1f}% of a core)")  # fmt: skip
    print(f"  peak RSS           {ours['rss']:.0f} MB"
          + (f"  (gc threshold {args.gc_threshold})" if args.gc_threshold else ""))
    for line in ours["errors"]:
        print(f"  log: {line}")
    if args.profile:
        print_profile_shares(args.profile)
    if "api" in ours:
        api = ours["api"]
        print(f"API creation ({args.api_connections} connections to {args.api_processes} api "
              "process(es), POST /api/v1/triggers, on the tables above)")  # fmt: skip
        print(f"  {api['created']}/{api['n']} created (201) in {api['seconds']:.1f} s: "
              f"{api['created'] / api['seconds']:.0f} triggers/s; statuses {api['statuses']}")
        print(f"  latency            {summary(api['latencies'])}")
        print(f"  CPU, % of a core   api {100 * api['cpu_api']:.0f} (all processes), mariadb "
              f"{100 * api['cpu_mariadb']:.0f}, the client {100 * api['cpu_client']:.0f}")


def print_profile_shares(path: str) -> None:
    """The reconcile's share of the scheduler's profiled time (cumulative, so the awaits
    inside count only while they run)."""
    import pstats

    stats: Any = pstats.Stats(path)
    total = stats.total_tt
    print(f"  cProfile ({path}): {total:.1f} s profiled")
    for (file, _line, func), (_cc, _nc, _tt, ct, _callers) in stats.stats.items():
        if (file.endswith("scheduler/reconcile.py") and func == "reload") or (
                file.endswith("store/schedules.py") and func == "due_points"):  # fmt: skip
            print(f"    {func:<12} {ct:.2f} s cumulative = {100 * ct / total:.1f}%")


if __name__ == "__main__":
    main()
