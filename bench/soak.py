"""Soak: the roles in separate processes under a sustained load while a chaos loop kills
and restarts them, then an audit from outside of what was accepted and delivered.

    python bench/soak.py [--minutes 30] [--rate 250] [--scheduled-rate 50] [--no-chaos]
                         [--chaos-every 40] [--linger-ms 200] [--partitions 2]

Starts its own private MariaDB and embedded broker (triggerd.devstack), migrates, and
runs `triggerd run` once per process: api ×2, scheduler ×2, worker ×2, retention ×2
(one process of each role is never killed, so its memory can be followed for the whole
run; the client spreads webhooks over both api processes and moves to the other when
one refuses connections, as a load balancer would). Load, open loop, `--rate` events a
second in all: `--scheduled-rate` of them scheduled firings (60 s interval triggers
inserted in bulk, first runs spread over a minute), the rest webhooks to 50 webhook
triggers. Every trigger delivers to a sink (a subprocess of this script) that answers
500 to the first arrival of ~2% of events (chosen by a hash of the event id) and 200 to
everything else, and records every arrival.

Chaos (unless --no-chaos), every `--chaos-every` seconds, never in the last 20 s of the
load: kill -9 one of the killable processes (api-a, scheduler-a, worker-a, retention-a
in turn) and start it again 2 s later; once, near a third of the run, MariaDB is
stopped and started again on the same data dir and port; once, near two thirds, the
broker, which loses what it held (memory storage): the outbox relay and the delivery
backstop (TRIGGERD_REDELIVER_AFTER, 15 s here) must recover those jobs. A chaos window
runs from the event until every process answers /health again, plus 5 s.

Every minute (`--report-every`): webhooks sent, 202s, 5xx, connection errors (`conn`),
scheduled firings (`fired`), deliveries the sink answered 2xx (`deliv`), the backlog
(`pend`: events pending or retrying; `owed`: events owing a job to Kafka), and the CPU
(% of one core over the minute; `nan` for a process started within it) and RSS (MB) of
the broker, MariaDB, each triggerd process, the sink and this driver (`drv`). When the load
stops the schedulers get SIGTERM 5 s later; a minute after the load stopped the audit
runs, with PASS/FAIL per check:

- every 202 has its event and every due occurrence of every interval trigger (counted
  from its first run and interval, up to when the load stopped) has exactly one event;
- every event reached the sink with a 2xx; duplicate deliveries (more than one 2xx for
  one event) are counted, and are not a failure (delivery is at least once);
- nothing pending, retrying or owed to Kafka a minute after the load stopped;
- no 5xx outside the chaos windows;
- each process's RSS at 5/6 of the run within 15% of its RSS at 1/6 (minutes 25 and 5
  of a 30-minute run), for processes not killed in between.

The harness (client, sink) shares the machine's cores with what it measures.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
import zlib
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ingest import stop  # noqa: E402  (bench/ingest.py, beside this script)
from lean_http import _header, _messages  # noqa: E402
from machine import cpu_seconds, describe  # noqa: E402
from scheduler_drift import insert_all, iso  # noqa: E402

from triggerd.devstack import KafkaBroker, MariaDBServer, free_port  # noqa: E402

INTERVAL = 60  # seconds, of every scheduled trigger
WEBHOOK_TRIGGERS = 50  # jobs are keyed by trigger: spread over the partitions
FAIL_ONE_IN = 50  # the sink fails the first arrival of ~2% of events
WINDOW_TAIL = 5.0  # seconds a chaos window lasts after everything is healthy again
REDELIVER_AFTER = "15s"
KILLABLE = ("api-a", "scheduler-a", "worker-a", "retention-a")
PROCESSES = ("api-a", "api-b", "scheduler-a", "scheduler-b", "worker-a", "worker-b",
             "retention-a", "retention-b")  # fmt: skip


# --- the sink (this script re-run with --sink) ---------------------------------------------


def fails_first(event_id: bytes) -> bool:
    return zlib.crc32(event_id) % FAIL_ONE_IN == 0


class _FlakySink(asyncio.Protocol):
    """Answers 500 to the first arrival of the chosen events, 200 otherwise; appends
    `<time> <event id> <status>` per arrival to the shared buffer."""

    def __init__(self, seen: set[bytes], lines: list[bytes]) -> None:
        self.seen = seen
        self.lines = lines
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        assert self.transport is not None
        for head, _body in _messages(self.buffer):
            event_id = _header(head, b"x-event-id") or b"-"
            status = 200
            if event_id not in self.seen:
                self.seen.add(event_id)
                if fails_first(event_id):
                    status = 500
            self.lines.append(b"%.3f %s %d\n" % (time.time(), event_id, status))
            reason = b"OK" if status == 200 else b"Internal Server Error"
            self.transport.write(b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\n"
                                 b"Content-Length: 2\r\n\r\n{}" % (status, reason))  # fmt: skip


async def flaky_sink(port: int, out: Path) -> None:
    """Serve until SIGTERM, writing the arrivals to `out` every 0.5 s (so the driver can
    count deliveries per minute) and once more at the end."""
    loop = asyncio.get_running_loop()
    seen: set[bytes] = set()
    lines: list[bytes] = []
    server = await loop.create_server(lambda: _FlakySink(seen, lines), "127.0.0.1", port)
    done = loop.create_future()
    loop.add_signal_handler(signal.SIGTERM, done.set_result, None)
    with open(out, "ab") as file:
        while not done.done():
            await asyncio.wait([done], timeout=0.5)
            if lines:
                file.write(b"".join(lines))
                lines.clear()
                file.flush()
    server.close()


def sink_main(port: int, out: str) -> None:
    import uvloop

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(flaky_sink(port, Path(out)))


# --- processes ---------------------------------------------------------------------------


def rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def cpu_or_nan(pid: int) -> float:
    try:
        return cpu_seconds(pid)
    except OSError:
        return float("nan")


@dataclass
class Role:
    name: str  # api-a, worker-b, ...
    roles: str
    port: int
    env: dict[str, str]
    log: Path
    proc: subprocess.Popen[bytes] | None = None

    def spawn(self) -> None:
        full = {**os.environ, **self.env, "TRIGGERD_HTTP_PORT": str(self.port),
                "TRIGGERD_ROLES": self.roles, "TRIGGERD_LOG_LEVEL": "warning",
                "TRIGGERD_INSTANCE_ID": f"{self.name}-{uuid.uuid4().hex[:6]}"}  # fmt: skip
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "triggerd", "run"], env=full,
                                         stdout=out, stderr=subprocess.STDOUT)  # fmt: skip

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid


def healthy(port: int) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


def wait_healthy(ports: list[int], timeout: float = 120.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(healthy(port) for port in ports):
            return True
        time.sleep(0.3)
    return False


# --- the load ----------------------------------------------------------------------------


@dataclass
class Counts:
    sent: int = 0
    accepted: int = 0
    server_errors: int = 0
    other_status: int = 0
    conn_errors: int = 0
    shed: int = 0  # due but not sent: too many requests in flight (client side)


@dataclass
class Load:
    minute: Counts = field(default_factory=Counts)
    total: Counts = field(default_factory=Counts)
    accepted: list[str] = field(default_factory=list)
    errors_5xx: list[tuple[float, int]] = field(default_factory=list)  # (time, status)
    errors_conn: list[tuple[float, str]] = field(default_factory=list)

    def count(self, attr: str) -> None:
        for counts in (self.minute, self.total):
            setattr(counts, attr, getattr(counts, attr) + 1)


async def drive(load: Load, api_ports: list[int], hooks: list[str], rate: float,
                seconds: float) -> None:  # fmt: skip
    """Open loop: one POST every 1/rate s, round robin over the api processes and the
    webhook triggers; a refused connection moves the request to the next api."""
    import aiohttp

    body = json.dumps({"order_id": "o-1", "amount": 12.5}).encode()
    headers = {"Content-Type": "application/json"}
    timeout = aiohttp.ClientTimeout(total=15)
    inflight: set[asyncio.Task[None]] = set()

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=256),
                                     timeout=timeout) as http:  # fmt: skip

        async def post(n: int) -> None:
            hook = hooks[n % len(hooks)]
            for k in range(len(api_ports)):
                port = api_ports[(n + k) % len(api_ports)]
                try:
                    async with http.post(f"http://127.0.0.1:{port}/api/v1/webhook/{hook}",
                                         data=body, headers=headers) as resp:  # fmt: skip
                        if resp.status == 202:
                            load.accepted.append((await resp.json())["event_id"])
                            load.count("accepted")
                        elif resp.status >= 500:
                            load.errors_5xx.append((time.time(), resp.status))
                            load.count("server_errors")
                        else:
                            load.count("other_status")
                        return
                except aiohttp.ClientConnectorError as exc:
                    if k == len(api_ports) - 1:
                        load.errors_conn.append((time.time(), type(exc).__name__))
                        load.count("conn_errors")
                except (aiohttp.ClientError, TimeoutError) as exc:
                    load.errors_conn.append((time.time(), type(exc).__name__))
                    load.count("conn_errors")
                    return

        start = time.monotonic()
        for n in range(int(rate * seconds)):
            delay = start + n / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            if len(inflight) >= 1024:
                load.count("shed")
                continue
            load.count("sent")
            task = asyncio.create_task(post(n))
            inflight.add(task)
            task.add_done_callback(inflight.discard)
        if inflight:
            await asyncio.wait(inflight, timeout=30)


# --- the stack -----------------------------------------------------------------------------


class Stack:
    def __init__(self, args: argparse.Namespace, work: Path) -> None:
        self.args = args
        self.work = work
        self.mariadb = MariaDBServer()
        self.broker = KafkaBroker()
        self.sink_port = free_port()
        self.sink_file = work / "arrivals.txt"
        self.sink: subprocess.Popen[bytes] | None = None
        self.procs: dict[str, Role] = {}
        self.windows: list[tuple[float, float]] = []  # chaos windows (time.time())
        self.killed: dict[str, list[float]] = {}
        self.db = "soak"

    def env(self) -> dict[str, str]:
        return {
            "TRIGGERD_DATABASE_URL": self.mariadb.url(self.db),
            "TRIGGERD_KAFKA_BOOTSTRAP": self.broker.bootstrap,
            "TRIGGERD_KAFKA_TOPIC": "soak-events",
            "TRIGGERD_KAFKA_PARTITIONS": str(self.args.partitions),
            "TRIGGERD_KAFKA_LINGER": f"{self.args.linger_ms}ms",
            "TRIGGERD_KAFKA_SESSION_TIMEOUT": "6s",
            "TRIGGERD_KAFKA_HEARTBEAT_INTERVAL": "1s",
            "TRIGGERD_REDELIVER_AFTER": REDELIVER_AFTER,
            # the sink is on loopback, which deliveries may reach only when allowed
            "TRIGGERD_DELIVERY_ALLOW_NETWORKS": "127.0.0.0/8",
            # the retention role archives (work for it) but deletes nothing the audit reads
            "TRIGGERD_RETENTION_ARCHIVE_AFTER": "30s",
            "TRIGGERD_RETENTION_DELETE_AFTER": "48h",
            "TRIGGERD_RETENTION_INTERVAL": "10s",
        }  # fmt: skip

    def start(self) -> None:
        self.mariadb.start()
        self.broker.start()
        self.mariadb.create_database(self.db)
        env = {**os.environ, **self.env()}
        subprocess.run([sys.executable, "-m", "triggerd", "migrate"], env=env, check=True,
                       capture_output=True)  # fmt: skip
        self.sink = subprocess.Popen([sys.executable, __file__, "--sink", str(self.sink_port),
                                      str(self.sink_file)])  # fmt: skip
        for name in PROCESSES:
            role = Role(name, name.split("-")[0], free_port(), self.env(),
                        self.work / f"{name}.log")  # fmt: skip
            role.spawn()
            self.procs[name] = role
        if not wait_healthy([r.port for r in self.procs.values()]):
            raise SystemExit(f"the processes did not become healthy; logs in {self.work}")

    def pids(self) -> dict[str, int]:
        found = {}
        for name, server in (("broker", self.broker), ("mariadb", self.mariadb)):
            if server.proc is not None:
                found[name] = server.proc.pid
        found.update((name, role.pid) for name, role in self.procs.items())
        if self.sink is not None:
            found["sink"] = self.sink.pid
        found["driver"] = os.getpid()
        return found

    def sql(self, query: str, params: Any = None) -> list[tuple[Any, ...]]:
        import pymysql

        conn = pymysql.connect(host="127.0.0.1", port=self.mariadb.port, user="root",
                               database=self.db, autocommit=True)  # fmt: skip
        try:
            with conn.cursor() as cur:
                cur.execute(query, params)
                return list(cur.fetchall())
        finally:
            conn.close()

    def backlog(self) -> tuple[int, int, int]:
        """(events pending or retrying, events owing a job to Kafka, scheduled firings so
        far)."""
        rows = self.sql("SELECT SUM(execution_status IN ('pending', 'retrying')),"
                        " SUM(publish_at IS NOT NULL), SUM(source = 'scheduler')"
                        " FROM event_logs")  # fmt: skip
        return int(rows[0][0] or 0), int(rows[0][1] or 0), int(rows[0][2] or 0)

    def close(self) -> None:
        for role in self.procs.values():
            stop(role.proc)
        stop(self.sink)
        self.broker.close()
        self.mariadb.close()

    # -- chaos -------------------------------------------------------------------------

    def all_healthy(self) -> bool:
        return wait_healthy([r.port for r in self.procs.values()], timeout=180)

    def kill(self, name: str) -> str:
        role = self.procs[name]
        assert role.proc is not None
        role.proc.kill()  # SIGKILL
        role.proc.wait()
        self.killed.setdefault(name, []).append(time.time())
        time.sleep(2)
        role.spawn()
        return f"kill -9 {name} (pid {role.proc.pid}), restarted 2 s later"

    def restart_mariadb(self) -> str:
        self.mariadb.stop()
        time.sleep(3)
        self.mariadb.start(timeout=120)
        return "MariaDB stopped (SIGTERM), down 3 s, started on the same data dir and port"

    def restart_broker(self) -> str:
        self.broker.stop()
        time.sleep(3)
        self.broker.start()
        return "broker stopped, down 3 s, started empty (memory storage)"


def chaos_plan(load_seconds: float, every: float) -> list[tuple[float, str]]:
    """(seconds after the load started, what) for each chaos event."""
    times = []
    t = every
    while t <= load_seconds - 20:
        times.append(t)
        t += every
    if not times:
        return []
    plan = {t: "" for t in times}
    db_at = min(times, key=lambda t: abs(t - load_seconds / 3))
    plan[db_at] = "mariadb"
    rest = [t for t in times if t != db_at]
    if rest:
        plan[min(rest, key=lambda t: abs(t - 2 * load_seconds / 3))] = "broker"
    kills = iter(KILLABLE * len(times))
    return [(t, what or next(kills)) for t, what in sorted(plan.items())]


async def chaos(stack: Stack, plan: list[tuple[float, str]], started: float,
                log: list[str]) -> None:  # fmt: skip
    for at, what in plan:
        await asyncio.sleep(max(0.0, started + at - time.time()))
        begin = time.time()
        if what == "mariadb":
            done = await asyncio.to_thread(stack.restart_mariadb)
        elif what == "broker":
            done = await asyncio.to_thread(stack.restart_broker)
        else:
            done = await asyncio.to_thread(stack.kill, what)
        ok = await asyncio.to_thread(stack.all_healthy)
        end = time.time()
        stack.windows.append((begin, end + WINDOW_TAIL))
        line = (f"  chaos {(begin - started) / 60:5.2f} min: {done}; all healthy after"
                f" {end - begin:.1f} s{'' if ok else ' (NOT HEALTHY after 180 s)'}")  # fmt: skip
        log.append(line)
        print(line, flush=True)


# --- reporting ---------------------------------------------------------------------------


class Meter:
    """Per-process CPU between two readings (by pid: a restarted process starts at 0)."""

    def __init__(self) -> None:
        self.last: dict[str, tuple[int, float, float]] = {}  # name: (pid, cpu, at)

    def read(self, pids: dict[str, int]) -> dict[str, tuple[float, float]]:
        """{name: (CPU % of a core since the last reading, RSS MB)}."""
        now = time.monotonic()
        out = {}
        for name, pid in pids.items():
            cpu = cpu_or_nan(pid)
            prev = self.last.get(name)
            if prev and prev[0] == pid:
                share = (cpu - prev[1]) / (now - prev[2]) * 100
            else:
                share = float("nan")
            self.last[name] = (pid, cpu, now)
            out[name] = (share, rss_mb(pid))
        return out


SHORT = {"api-a": "apiA", "api-b": "apiB", "scheduler-a": "schA", "scheduler-b": "schB",
         "worker-a": "wrkA", "worker-b": "wrkB", "retention-a": "retA",
         "retention-b": "retB", "mariadb": "db", "broker": "broker", "sink": "sink",
         "driver": "drv"}  # fmt: skip


class SinkReader:
    """Reads the sink's arrivals file as it grows."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.partial = b""

    def new_ok(self) -> int:
        if not self.path.exists():
            return 0
        with open(self.path, "rb") as file:
            file.seek(self.offset)
            data = file.read()
        self.offset += len(data)
        data = self.partial + data
        lines = data.split(b"\n")
        self.partial = lines.pop()
        return sum(1 for line in lines if line.endswith(b" 200"))


async def report(stack: Stack, load: Load, started: float, every: float,
                 samples: dict[float, dict[str, tuple[int, float]]],
                 rss_at: tuple[float, float], until: asyncio.Event) -> None:  # fmt: skip
    meter = Meter()
    reader = SinkReader(stack.sink_file)
    meter.read(stack.pids())
    reader.new_ok()
    print(f"{'min':>5} {'sent':>6} {'202':>6} {'5xx':>4} {'conn':>4} {'fired':>6}"
          f" {'deliv':>6} {'pend':>6} {'owed':>5}  CPU%/RSS MB per process",
          flush=True)  # fmt: skip
    fired_before = 0
    sampled: set[float] = set()
    tick = started
    while not until.is_set():
        # sample the RSS at the two checkpoints exactly, between the reports
        nxt = tick + every
        for mark in rss_at:
            if mark not in sampled and started + mark < nxt:
                await asyncio.sleep(max(0.0, started + mark - time.time()))
                samples[mark] = {n: (p, rss_mb(p)) for n, p in stack.pids().items()}
                sampled.add(mark)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(until.wait(), timeout=max(0.0, nxt - time.time()))
        if until.is_set() and time.time() - tick < every / 4:
            return  # the audit is next: no line for a sliver of an interval
        tick = nxt
        minute, load.minute = load.minute, Counts()
        try:
            pending, owed, fired = await asyncio.to_thread(stack.backlog)
            backlog = f"{fired - fired_before:6d} {{}} {pending:6d} {owed:5d}"
            fired_before = fired
        except Exception:  # MariaDB may be restarting
            backlog = f"{'-':>6} {{}} {'-':>6} {'-':>5}"
        procs = meter.read(stack.pids())
        cells = " ".join(f"{SHORT.get(n, n)} {c:.0f}/{r:.0f}" for n, (c, r) in procs.items())
        print(f"{(time.time() - started) / 60:5.1f} {minute.sent:6d} {minute.accepted:6d}"
              f" {minute.server_errors:4d} {minute.conn_errors:4d}"
              f" {backlog.format(f'{reader.new_ok():6d}')}  {cells}", flush=True)  # fmt: skip


# --- the audit -----------------------------------------------------------------------------


def in_window(at: float, windows: list[tuple[float, float]]) -> bool:
    return any(begin <= at <= end for begin, end in windows)


def audit(stack: Stack, load: Load, intervals: dict[str, datetime], stopped: datetime,
          samples: dict[float, dict[str, tuple[int, float]]], rss_at: tuple[float, float],
          pending_after: tuple[int, int, Counter[str]]) -> bool:  # fmt: skip
    checks: list[tuple[str, bool, str]] = []
    events = stack.sql("SELECT id, source, trigger_id, scheduled_for, execution_status"
                       " FROM event_logs")  # fmt: skip
    by_id = {row[0]: row for row in events}

    accepted = set(load.accepted)
    missing = accepted - by_id.keys()
    webhook_ids = {row[0] for row in events if row[1] == "webhook"}
    unseen = webhook_ids - accepted
    checks.append(("every 202 has its event", not missing and len(accepted) == len(load.accepted),
                   f"{len(load.accepted)} 202s, {len(missing)} without an event,"
                   f" {len(load.accepted) - len(accepted)} event ids answered twice;"
                   f" {len(unseen)} webhook events the client saw no 202 for (a request cut"
                   f" by a kill)"))  # fmt: skip

    stopped_naive = stopped.replace(tzinfo=None)
    per_occurrence = Counter((row[2], row[3]) for row in events if row[1] == "scheduler")
    doubled = sum(1 for n in per_occurrence.values() if n > 1)
    fired = Counter(tid for (tid, at) in per_occurrence if at <= stopped_naive)
    expected = 0
    short = 0
    for tid, first in intervals.items():
        due = (int((stopped - first).total_seconds() // INTERVAL) + 1) if first <= stopped else 0
        expected += due
        short += max(0, due - fired.get(tid, 0))
    statuses = stack.sql("SELECT status, COUNT(*) FROM trigger_schedules WHERE"
                         " scheduled_for <= %s GROUP BY status", (stopped_naive,))  # fmt: skip
    checks.append(("every due occurrence has exactly one event", short == 0 and doubled == 0,
                   f"{expected} due by the end of the load, {short} without an event,"
                   f" {doubled} with more than one; schedule rows due by then: "
                   + ", ".join(f"{s} {n}" for s, n in statuses)))  # fmt: skip

    ok: Counter[str] = Counter()
    arrivals: Counter[str] = Counter()
    first_failed = 0
    for line in stack.sink_file.read_bytes().splitlines():
        _at, event_id, status = line.decode().split(" ")
        arrivals[event_id] += 1
        if status == "200":
            ok[event_id] += 1
        elif arrivals[event_id] == 1:
            first_failed += 1
    never = [e for e in by_id if e not in ok]
    duplicates = sum(n - 1 for n in ok.values() if n > 1)
    strangers = [e for e in arrivals if e not in by_id]
    checks.append(("every event reached the sink", not never,
                   f"{len(by_id)} events, {len(ok)} delivered (2xx), {len(never)} never"
                   f" (by status: {dict(Counter(by_id[e][4] for e in never))});"
                   f" {first_failed} first arrivals answered 500"
                   f" ({first_failed / max(1, len(arrivals)):.1%});"
                   f" {sum(arrivals.values())} arrivals, {len(strangers)} unknown"))  # fmt: skip
    checks.append(("duplicate deliveries (counted, at least once allowed)", True,
                   f"{duplicates} extra 2xx deliveries over"
                   f" {sum(1 for n in ok.values() if n > 1)} events"))  # fmt: skip

    pending, owed, by_status = pending_after
    checks.append(("nothing pending/retrying/owed a minute after the load stopped",
                   pending == 0 and owed == 0,
                   f"pending or retrying {pending}, owed to Kafka {owed};"
                   f" events by status: {dict(by_status)}"))  # fmt: skip

    outside = [(at, s) for at, s in load.errors_5xx if not in_window(at, stack.windows)]
    conn_outside = [e for e in load.errors_conn if not in_window(e[0], stack.windows)]
    checks.append(("no 5xx outside chaos windows", not outside,
                   f"{len(load.errors_5xx)} 5xx in all, {len(outside)} outside"
                   f" {len(stack.windows)} windows {dict(Counter(s for _, s in outside))};"
                   f" connection errors {len(load.errors_conn)}, outside windows"
                   f" {len(conn_outside)}"))  # fmt: skip

    early, late = (samples.get(mark, {}) for mark in rss_at)
    cells = []
    rss_ok = True
    for name in early:
        if name not in late:
            continue
        (pid0, rss0), (pid1, rss1) = early[name], late[name]
        if pid0 != pid1:
            cells.append(f"{name} restarted")
            continue
        growth = rss1 / rss0 - 1 if rss0 else float("nan")
        within = name not in PROCESSES or abs(growth) <= 0.15
        rss_ok &= within
        cells.append(f"{name} {rss0:.0f}->{rss1:.0f} MB {growth:+.0%}"
                     f"{'' if within else ' OVER'}")  # fmt: skip
    checks.append((f"RSS at {rss_at[1] / 60:.1f} min within 15% of {rss_at[0] / 60:.1f} min",
                   rss_ok and bool(early) and bool(late),
                   "; ".join(cells) + " (judged: triggerd's processes; shown: the broker,"
                   " which keeps every batch, MariaDB's buffer pool, the harness)"))  # fmt: skip

    print("audit:")
    for name, passed, detail in checks:
        print(f"  {'PASS' if passed else 'FAIL'}  {name}: {detail}")
    return all(passed for _, passed, _ in checks)


# --- the run -------------------------------------------------------------------------------


def insert_triggers(stack: Stack, scheduled: int, start: datetime
                    ) -> tuple[list[str], dict[str, datetime]]:  # fmt: skip
    endpoint = f"http://127.0.0.1:{stack.sink_port}/in"
    hooks = []
    for _ in range(WEBHOOK_TRIGGERS):
        tid = str(uuid.uuid4())
        stack.sql("INSERT INTO triggers (id, name, type, status, config, version, created_at,"
                  " updated_at) VALUES (%s, 'soak-hook', 'webhook', 'active', %s, 1,"
                  " UTC_TIMESTAMP(3), UTC_TIMESTAMP(3))",
                  (tid, json.dumps({"endpoint": endpoint})))  # fmt: skip
        hooks.append(tid)
    rows = []
    base = start.replace(microsecond=0)
    for j in range(scheduled):
        first = base + timedelta(milliseconds=(j * INTERVAL * 1000) // max(1, scheduled))
        cfg = {"interval_seconds": INTERVAL, "first_run_at": iso(first), "endpoint": endpoint,
               "misfire_policy": "all", "payload": {"n": j}}  # fmt: skip
        rows.append(("interval_scheduled", cfg, first))
    if rows:
        insert_all(stack.mariadb.url(stack.db), rows)
    found = stack.sql("SELECT t.id, s.scheduled_for FROM triggers t JOIN trigger_schedules s"
                      " ON s.trigger_id = t.id WHERE t.type = 'interval_scheduled'")  # fmt: skip
    return hooks, {tid: at.replace(tzinfo=UTC) for tid, at in found}


async def soak(args: argparse.Namespace, stack: Stack) -> bool:
    load_seconds = args.minutes * 60
    scheduled = round(args.scheduled_rate * INTERVAL)
    webhook_rate = args.rate - args.scheduled_rate
    first_at = datetime.now(UTC) + timedelta(seconds=5)
    hooks, intervals = await asyncio.to_thread(insert_triggers, stack, scheduled, first_at)
    print(f"{webhook_rate:g} webhooks/s over {len(hooks)} triggers and 2 api processes +"
          f" {len(intervals)} interval triggers every {INTERVAL} s ({args.scheduled_rate:g}"
          f" firings/s) for {args.minutes:g} min; sink fails the first arrival of 1 in"
          f" {FAIL_ONE_IN} events; linger {args.linger_ms:g} ms, {args.partitions}"
          f" partitions; chaos {'off' if args.no_chaos else f'every {args.chaos_every:g} s'}",
          flush=True)  # fmt: skip
    load = Load()
    started = time.time()
    rss_at = (load_seconds / 6, load_seconds * 5 / 6)
    samples: dict[float, dict[str, tuple[int, float]]] = {}
    finished = asyncio.Event()
    reporter = asyncio.create_task(report(stack, load, started, args.report_every, samples,
                                          rss_at, finished))  # fmt: skip
    plan = [] if args.no_chaos else chaos_plan(load_seconds, args.chaos_every)
    chaos_log: list[str] = []
    chaos_task = asyncio.create_task(chaos(stack, plan, started, chaos_log))
    await drive(load, [stack.procs["api-a"].port, stack.procs["api-b"].port], hooks,
                webhook_rate, load_seconds)  # fmt: skip
    stopped_at = time.time()
    stopped = datetime.fromtimestamp(stopped_at, UTC)
    print(f"load stopped at {(stopped_at - started) / 60:.2f} min", flush=True)
    await chaos_task
    await asyncio.sleep(max(0.0, stopped_at + 5 - time.time()))
    for name in ("scheduler-a", "scheduler-b"):  # no more firings after the load
        await asyncio.to_thread(stop, stack.procs[name].proc)
    while time.time() < stopped_at + 60:
        await asyncio.sleep(min(10.0, stopped_at + 60 - time.time()))
        pending, owed, _ = await asyncio.to_thread(stack.backlog)
        print(f"  +{time.time() - stopped_at:4.0f} s after the load: pending/retrying"
              f" {pending}, owed {owed}", flush=True)  # fmt: skip
    rows = stack.sql("SELECT execution_status, COUNT(*) FROM event_logs GROUP BY 1")
    by_status: Counter[str] = Counter({str(s): int(n) for s, n in rows})
    pending, owed, _ = await asyncio.to_thread(stack.backlog)
    pending_after = (pending, owed, by_status)
    finished.set()
    await reporter
    stop(stack.sink)  # its last write
    print("chaos events:" + ("" if chaos_log else " none"))
    for line in chaos_log:
        print(line)
    total = load.total
    print(f"load totals: sent {total.sent}, 202 {total.accepted}, 5xx {total.server_errors},"
          f" other status {total.other_status}, connection errors {total.conn_errors},"
          f" shed by the client {total.shed}")  # fmt: skip
    return await asyncio.to_thread(audit, stack, load, intervals, stopped, samples, rss_at,
                                   pending_after)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30.0, help="of load")
    parser.add_argument("--rate", type=float, default=250.0,
                        help="events a second in all: webhooks + scheduled firings")  # fmt: skip
    parser.add_argument("--scheduled-rate", type=float, default=50.0,
                        help="scheduled firings a second, of --rate")  # fmt: skip
    parser.add_argument("--no-chaos", action="store_true")
    parser.add_argument("--chaos-every", type=float, default=40.0, help="seconds")
    parser.add_argument("--linger-ms", type=float, default=200.0,
                        help="TRIGGERD_KAFKA_LINGER")  # fmt: skip
    parser.add_argument("--partitions", type=int, default=2)
    parser.add_argument("--report-every", type=float, default=60.0, help="seconds")
    parser.add_argument("--keep", action="store_true", help="keep the work dir (logs)")
    parser.add_argument("--sink", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.sink:
        return sink_main(int(args.sink[0]), args.sink[1])
    print(" ".join(["python", "bench/soak.py", *sys.argv[1:]]))
    print(describe(), flush=True)
    work = Path(tempfile.mkdtemp(prefix="triggerd-soak-"))
    stack = Stack(args, work)
    passed = False
    try:
        stack.start()
        passed = asyncio.run(soak(args, stack))
    finally:
        stack.close()
        if args.keep or not passed:
            print(f"logs: {work}")
        else:
            import shutil

            shutil.rmtree(work, ignore_errors=True)
    print("RESULT:", "PASS" if passed else "FAIL")
    sys.exit(0 if passed else 1)


if __name__ == "__main__":
    main()
