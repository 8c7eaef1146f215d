"""The persistent peer: APScheduler 4 on PostgreSQL beside triggerd, the same load.

    python bench/apscheduler_peer.py [--sizes 1000,10000,100000] [--seconds 60]
        [--postgres postgresql+asyncpg://postgres@127.0.0.1:5432/test]
        [--peer-python .venv-aps4/bin/python] [--skip-triggerd]

At each size, N interval schedules of 60 s whose first runs are spread over the minute
at millisecond offsets (~N/60 due every second):

- APScheduler 4 (`AsyncScheduler`, its defaults: 100 concurrent jobs, 30 s leases) with
  its SQLAlchemy data store on PostgreSQL (asyncpg), in a fresh schema dropped at the
  end; the schedules are added through `add_schedule` (20 at a time) before the
  scheduler starts. The job records callback time - `scheduled_fire_time`. APScheduler
  4 does not run on MariaDB, hence PostgreSQL. It runs under its own interpreter
  (`--peer-python`): APScheduler 4 and the APScheduler 3 of the `test` extra share a
  package name, so the `bench` extra goes into a venv of its own:
  `python -m venv .venv-aps4 && .venv-aps4/bin/pip install -e '.[bench]'`.
- triggerd: `bench/scheduler_drift.py --mix interval --burst 0` at the same size (its
  publish delay: Kafka record timestamp - fire_at).

Both measure after a 30 s warm-up for `--seconds`. APScheduler's delays are those of the
callbacks that ran in the window (when it falls behind, its lag shows there); a size is
stopped early when, after 20 s of the window, it runs fewer than half the expected
fires per second and its latest callback is over 5 s late — it cannot keep up — and
the larger sizes are not tried on it. Printed: p50/p99/max and fires/s of both, and the
ratio APScheduler / triggerd of each percentile.
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
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
INTERVAL = 60
WARM_UP = 30.0
DEFAULT_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"

# (callback time, due) of every run, in the child: module level, so the task is a plain
# importable function (APScheduler 4 refers to tasks by "module:name").
RUNS: list[tuple[float, float]] = []


async def tick() -> None:
    from apscheduler import current_job

    due = current_job.get().scheduled_fire_time
    RUNS.append((time.time(), due.timestamp() if due is not None else float("nan")))


def peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def child(n: int, seconds: float, url: str) -> dict[str, Any]:
    """Runs under --peer-python; returns the stats (printed as JSON by the caller)."""
    apscheduler: Any = __import__("apscheduler")
    sqlalchemy_store: Any = __import__("apscheduler.datastores.sqlalchemy",
                                       fromlist=["SQLAlchemyDataStore"])  # fmt: skip
    interval: Any = __import__("apscheduler.triggers.interval", fromlist=["IntervalTrigger"])
    sa_async: Any = __import__("sqlalchemy.ext.asyncio", fromlist=["create_async_engine"])
    sa: Any = __import__("sqlalchemy")

    schema = f"aps_bench_{os.getpid()}"
    engine = sa_async.create_async_engine(url, pool_size=25)
    store = sqlalchemy_store.SQLAlchemyDataStore(engine, schema=schema)
    lead = 10 + n / 400  # adding runs at a few hundred schedules a second
    start = datetime.now(UTC) + timedelta(seconds=lead)
    base = start.replace(microsecond=0)
    measure_from = start.timestamp() + WARM_UP
    out: dict[str, Any] = {"n": n}
    try:
        async with apscheduler.AsyncScheduler(store) as scheduler:
            began = time.monotonic()
            gate = asyncio.Semaphore(20)

            async def add(j: int) -> None:
                first = base + timedelta(seconds=1, milliseconds=(j * INTERVAL * 1000) // n)
                trigger = interval.IntervalTrigger(seconds=INTERVAL, start_time=first)
                async with gate:
                    await scheduler.add_schedule(tick, trigger, id=f"s{j}",
                                                 misfire_grace_time=None)  # fmt: skip

            await asyncio.gather(*(add(j) for j in range(n)))
            out["add_s"] = time.monotonic() - began
            out["late_start"] = datetime.now(UTC) > start
            await scheduler.start_in_background()
            await asyncio.sleep(max(0.0, measure_from - time.time()))
            expected = n / INTERVAL
            end = measure_from + seconds
            while time.time() < end:
                await asyncio.sleep(1.0)
                elapsed = time.time() - measure_from
                ran = sum(1 for at, _ in RUNS if at >= measure_from)
                late = time.time() - RUNS[-1][1] if RUNS else float("inf")
                if elapsed >= 20 and ran / elapsed < expected / 2 and late > 5:
                    out["gave_up"] = (f"after {elapsed:.0f} s: {ran / elapsed:.0f} fires/s of "
                                      f"{expected:.0f} expected, the latest callback "
                                      f"{late:.0f} s late")  # fmt: skip
                    end = time.time()
                    break
            window = [(at, due) for at, due in RUNS if measure_from <= at < end]
            out["delays"] = [(at - due) * 1000 for at, due in window]
            out["fires_per_s"] = len(window) / max(end - measure_from, 1e-9)
            out["rss"] = peak_rss_mb()
            await scheduler.stop()
            await scheduler.wait_until_stopped()
    finally:
        async with engine.begin() as conn:
            await conn.execute(sa.text(f"DROP SCHEMA IF EXISTS {schema} CASCADE"))
        await engine.dispose()
    return out


def run_peer(args: argparse.Namespace, n: int) -> dict[str, Any]:
    lead = 10 + n / 400
    proc = subprocess.run(
        [args.peer_python, __file__, "--child", str(n), "--seconds", str(args.seconds),
         "--postgres", args.postgres],
        capture_output=True, text=True, timeout=lead + 10 * WARM_UP + 2 * args.seconds + 600,
    )  # fmt: skip
    if proc.returncode != 0:
        return {"n": n, "error": (proc.stderr.strip().splitlines() or ["?"])[-1]}
    data: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return data


def run_ours(args: argparse.Namespace, n: int) -> dict[str, Any]:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import scheduler_drift

    ns = argparse.Namespace(triggers=n, mix="interval", burst=0, seconds=args.seconds,
                            jitter=0.0, api_create=0, api_connections=0, profile=None,
                            gc_threshold=0, dump=None, log=None,
                            insert_rate=8000)  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="triggerd-bench-") as work:
        ours: dict[str, Any] = asyncio.run(scheduler_drift.run_triggerd(ns, Path(work)))
    return ours


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def line(name: str, delays: list[float], fires: float, extra: str = "") -> str:
    return (f"  {name:<13} p50 {pct(delays, 0.5):9.1f} ms  p99 {pct(delays, 0.99):9.1f} ms  "
            f"max {max(delays, default=float('nan')):9.1f} ms  {fires:6.0f} fires/s{extra}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--postgres", default=DEFAULT_URL)
    parser.add_argument("--peer-python", default=str(ROOT / ".venv-aps4" / "bin" / "python"))
    parser.add_argument("--skip-triggerd", action="store_true")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(asyncio.run(child(args.child, args.seconds, args.postgres))))
        return

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from machine import describe

    print(f"APScheduler 4 (SQLAlchemy store, PostgreSQL) beside triggerd: 60 s intervals, "
          f"{args.seconds:g} s measured after {WARM_UP:g} s", flush=True)  # fmt: skip
    print(describe(), flush=True)
    peer_holds = True
    for n in [int(size) for size in args.sizes.split(",")]:
        print(f"{n} schedules (~{n / INTERVAL:.0f} due/s)", flush=True)
        if peer_holds:
            theirs = run_peer(args, n)
            if "error" in theirs:
                print(f"  APScheduler 4 failed: {theirs['error']}")
                peer_holds = False
            else:
                note = f", {theirs['add_s']:.0f} s to add, RSS {theirs['rss']:.0f} MB"
                print(line("APScheduler 4", theirs["delays"], theirs["fires_per_s"], note))
                if theirs.get("gave_up"):
                    print(f"  APScheduler 4 cannot keep up, stopped {theirs['gave_up']}")
                    peer_holds = False
                if theirs.get("late_start"):
                    print("  (adding took longer than the lead: its first runs were late)")
        else:
            theirs = {}
            print("  APScheduler 4: not tried (it did not keep up with a smaller size)")
        if args.skip_triggerd:
            continue
        ours = run_ours(args, n)
        print(line("triggerd", ours["spread"], ours["fires_per_s"],
                   f", RSS {ours['rss']:.0f} MB"), flush=True)  # fmt: skip
        if theirs.get("delays"):
            ratios = [pct(theirs["delays"], q) / max(pct(ours["spread"], q), 1.0)
                      for q in (0.5, 0.99)]  # fmt: skip
            worst = max(theirs["delays"]) / max(max(ours["spread"], default=1.0), 1.0)
            print(f"  ratio APScheduler 4 / triggerd: p50 {ratios[0]:.1f}x, p99 {ratios[1]:.1f}x,"
                  f" max {worst:.1f}x (a triggerd figure under 1 ms counts as 1 ms)", flush=True)


if __name__ == "__main__":
    main()
