"""Webhook ingestion benchmark: throughput/latency of `POST /api/v1/webhook/{id}` and
end-to-end latency (202 → request at the trigger's endpoint).

    python bench/ingest.py [--seconds 10] [--connections 32] [--e2e-rate 1000]

Starts its own private MariaDB and broker (triggerd.devstack), migrates, inserts a
webhook trigger with a JSON Schema, then:
1. runs `triggerd run --roles api` (pinned to CPU 0) and drives it with wrk (pinned to
   CPU 1; `apt-get install wrk`): accepted req/s, p50/p99 — every request validated,
   durably written (group commit) and published; with `--without-lane`, again with
   TRIGGERD_WEBHOOK_FAST_LANE=false (every request through aiohttp's machinery);
2. the same wrk load against a minimal aiohttp handler that parses the JSON and
   answers 202 (the ceiling of this machine), and the ratio; and against a naive
   aiohttp + aiomysql handler that INSERTs each request on its own (no validation, no
   publish), for scale;
3. `triggerd run --roles api` and `triggerd run --roles worker` (two processes, as
   roles are split in production) and an open-loop client at `--e2e-rate` webhooks/s
   for `--e2e-seconds`; a sink process records when each delivery arrives: p50/p99 of
   (arrival − 202 received) and (arrival − request sent), and, from the tables, of
   each stage (fired_at → published_at → attempt started → arrival); then the MariaDB
   statements and each process's CPU per webhook. The client and the sink are the lean
   ones of bench/lean_http.py: they share the two cores with what they measure.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from lean_http import open_loop, sink  # noqa: E402  (bench/lean_http.py, beside this script)
from machine import cpu_seconds, describe  # noqa: E402

from triggerd.devstack import KafkaBroker, MariaDBServer, free_port  # noqa: E402

T = TypeVar("T")

SCHEMA = {
    "type": "object",
    "required": ["order_id", "amount", "items"],
    "properties": {
        "order_id": {"type": "string", "minLength": 1},
        "amount": {"type": "number", "minimum": 0},
        "currency": {"enum": ["EUR", "USD"]},
        "items": {"type": "array", "minItems": 1,
                  "items": {"type": "object", "required": ["sku", "qty"],
                            "properties": {"sku": {"type": "string"},
                                           "qty": {"type": "integer", "minimum": 1}}}},
    },
}  # fmt: skip
BODY = {"order_id": "o-1", "amount": 12.5, "currency": "EUR",
        "items": [{"sku": "a-1", "qty": 2}, {"sku": "b-7", "qty": 1}]}  # fmt: skip
WRK_LUA = """wrk.method = "POST"
wrk.body = '%s'
wrk.headers["Content-Type"] = "application/json"
"""


def pinned(cpu: int, argv: list[str]) -> list[str]:
    if shutil.which("taskset") and (os.cpu_count() or 1) > cpu:
        return ["taskset", "-c", str(cpu), *argv]
    return argv


def wait_http(url: str, timeout: float = 60.0) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"{url} not healthy within {timeout:.0f}s")
        time.sleep(0.2)


def pid_of(server: MariaDBServer | KafkaBroker) -> int:
    assert server.proc is not None, "started"
    return server.proc.pid


def start_daemon(env: dict[str, str], roles: str, port: int, log: Path,
                 cpu: int | None = 0) -> subprocess.Popen[bytes]:  # fmt: skip
    full = {**os.environ, **env, "TRIGGERD_HTTP_PORT": str(port), "TRIGGERD_ROLES": roles,
            "TRIGGERD_LOG_LEVEL": "warning"}  # fmt: skip
    argv = [sys.executable, "-m", "triggerd", "run"]
    with open(log, "ab") as out:
        proc = subprocess.Popen(argv if cpu is None else pinned(cpu, argv), env=full,
                                stdout=out, stderr=subprocess.STDOUT)  # fmt: skip
    wait_http(f"http://127.0.0.1:{port}/health")
    return proc


def stop(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is not None and proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def run_wrk(url: str, seconds: int, connections: int, lua: Path) -> dict[str, float]:
    if not shutil.which("wrk"):
        raise SystemExit("wrk not found: apt-get install -y wrk")
    base = ["wrk", "-t1", f"-c{connections}", "--latency", "-s", str(lua), url]
    subprocess.run(pinned(1, [*base[:3], "-d2s", *base[3:]]), check=True,
                   capture_output=True)  # warm-up  # fmt: skip
    out = subprocess.run(pinned(1, [*base[:3], f"-d{seconds}s", *base[3:]]), check=True,
                         capture_output=True, text=True).stdout  # fmt: skip
    total = int(re.search(r"(\d+) requests in ([\d.]+)(\w+)", out).group(1))  # type: ignore[union-attr]
    elapsed = _seconds(*re.search(r"requests in ([\d.]+)(\w+)", out).groups())  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    accepted = total - (int(bad.group(1)) if bad else 0)
    lat = dict(re.findall(r"^\s+(50|99)%\s+([\d.]+\w+)", out, re.MULTILINE))
    return {
        "accepted_per_s": accepted / elapsed, "requests": total, "non_2xx": total - accepted,
        "p50_ms": _seconds(*_split(lat["50"])) * 1000,
        "p99_ms": _seconds(*_split(lat["99"])) * 1000,
        "socket_errors": errors.group(1) if errors else "none",  # type: ignore[dict-item]
    }  # fmt: skip


def _split(text: str) -> tuple[str, str]:
    match = re.match(r"([\d.]+)(\w+)", text)
    assert match is not None
    return match.group(1), match.group(2)


def _seconds(value: str, unit: str) -> float:
    return float(value) * {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}[unit]


# --- helper processes (this script re-run with a flag) -----------------------------------


def _uvloop() -> Any:
    """The loop triggerd runs on (TRIGGERD_EVENT_LOOP's default), for the comparisons."""
    import uvloop

    return uvloop.new_event_loop()


def ceiling_server(port: int) -> None:
    """The minimal handler: parse the JSON body, answer 202 (on uvloop, as triggerd)."""
    import orjson
    from aiohttp import web

    async def handle(request: web.Request) -> web.Response:
        orjson.loads(await request.read())
        return web.Response(status=202, body=b'{"status":"accepted"}',
                            content_type="application/json")  # fmt: skip

    app = web.Application()
    app.router.add_post("/hook/{id}", handle)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None, loop=_uvloop())


def naive_server(port: int, database_url: str) -> None:
    """aiohttp + aiomysql, one INSERT per request (autocommit), answering 202 (on uvloop)."""
    import aiomysql
    import orjson
    from aiohttp import web

    from triggerd.config import DatabaseUrl

    url = DatabaseUrl.parse(database_url)

    async def startup(app: web.Application) -> None:
        app["pool"] = await aiomysql.create_pool(
            host=url.host, port=url.port, user=url.user, password=url.password,
            db=url.database, autocommit=True, maxsize=32)  # fmt: skip
        async with app["pool"].acquire() as conn, conn.cursor() as cur:
            await cur.execute("CREATE TABLE IF NOT EXISTS naive (id CHAR(36) PRIMARY KEY,"
                              " trigger_id CHAR(36), payload LONGTEXT, created_at DATETIME(3))")

    async def handle(request: web.Request) -> web.Response:
        payload = orjson.loads(await request.read())
        event_id = str(uuid.uuid4())
        async with request.app["pool"].acquire() as conn, conn.cursor() as cur:
            await cur.execute("INSERT INTO naive VALUES (%s, %s, %s, UTC_TIMESTAMP(3))",
                              (event_id, request.match_info["id"], orjson.dumps(payload).decode()))
        return web.Response(status=202, body=orjson.dumps({"event_id": event_id}),
                            content_type="application/json")  # fmt: skip

    async def cleanup(app: web.Application) -> None:
        app["pool"].close()
        await app["pool"].wait_closed()

    app = web.Application()
    app.on_startup.append(startup)
    app.on_cleanup.append(cleanup)
    app.router.add_post("/hook/{id}", handle)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None, loop=_uvloop())


def sink_server(port: int, out: str) -> None:
    """Records the arrival time (time.time()) of every delivery by X-Event-Id."""
    _uvloop_run(sink(port, Path(out)))


def _uvloop_run(main: Coroutine[Any, Any, T]) -> T:
    with asyncio.Runner(loop_factory=_uvloop) as runner:
        return runner.run(main)


def drive_open_loop(url: str, rate: int, seconds: float) -> dict[str, tuple[float, float]]:
    """`rate` POSTs per second on a fixed schedule; {event_id: (sent, 202 received)}."""
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    body = json.dumps(BODY).encode()
    results, failures = _uvloop_run(
        open_loop(parts.hostname, parts.port, parts.path, body, rate, seconds)
    )
    if failures:
        print(f"  e2e: {failures} requests not accepted")
    return results


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, math.ceil(p / 100 * len(ordered)) - 1))]


# --- the run ------------------------------------------------------------------------------


def insert_trigger(db_port: int, database: str, endpoint: str | None) -> str:
    import pymysql

    trigger_id = str(uuid.uuid4())
    config: dict[str, Any] = {"schema": SCHEMA}
    if endpoint:
        config["endpoint"] = endpoint
    conn = pymysql.connect(host="127.0.0.1", port=db_port, user="root", database=database,
                           autocommit=True)  # fmt: skip
    with conn.cursor() as cur:
        cur.execute(
            "INSERT INTO triggers (id, name, type, status, config, version, created_at,"
            " updated_at) VALUES (%s, 'bench', 'webhook', 'active', %s, 1, UTC_TIMESTAMP(3),"
            " UTC_TIMESTAMP(3))", (trigger_id, json.dumps(config)),
        )  # fmt: skip
    conn.close()
    return trigger_id


def wait_delivered(db_port: int, database: str, trigger_id: str, count: int,
                   timeout: float) -> None:  # fmt: skip
    import pymysql

    conn = pymysql.connect(host="127.0.0.1", port=db_port, user="root", database=database,
                           autocommit=True)  # fmt: skip
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            with conn.cursor() as cur:
                cur.execute("SELECT COUNT(*) FROM event_logs WHERE trigger_id = %s"
                            " AND execution_status = 'success'", (trigger_id,))  # fmt: skip
                row = cur.fetchone()
            if row and row[0] >= count:
                return
            time.sleep(0.2)
        print(f"  (not every delivery succeeded within {timeout:.0f}s)")
    finally:
        conn.close()


def stage_times(db_port: int, database: str, trigger_id: str) -> dict[str, tuple[float, ...]]:
    """{event id: (fired_at, published_at, attempt 1 started_at)} as Unix times."""
    import pymysql

    conn = pymysql.connect(host="127.0.0.1", port=db_port, user="root", database=database)
    with conn.cursor() as cur:
        cur.execute("SET time_zone = '+00:00'")
        cur.execute("SELECT e.id, UNIX_TIMESTAMP(e.fired_at), UNIX_TIMESTAMP(e.published_at),"
                    " UNIX_TIMESTAMP(d.started_at) FROM event_logs e JOIN delivery_attempts d"
                    " ON d.event_id = e.id AND d.attempt = 1"
                    " WHERE e.trigger_id = %s AND e.published_at IS NOT NULL",
                    (trigger_id,))  # fmt: skip
        found = {row[0]: tuple(float(v) for v in row[1:]) for row in cur.fetchall()}
    conn.close()
    return found


def statement_counts(db_port: int) -> dict[str, int]:
    """The server's statement counters (SHOW GLOBAL STATUS), by kind."""
    import pymysql

    kinds = {"Com_insert": "INSERT", "Com_update": "UPDATE", "Com_update_multi": "UPDATE join",
             "Com_select": "SELECT", "Com_begin": "BEGIN", "Com_commit": "COMMIT"}  # fmt: skip
    conn = pymysql.connect(host="127.0.0.1", port=db_port, user="root")
    with conn.cursor() as cur:
        cur.execute("SHOW GLOBAL STATUS WHERE Variable_name IN %s", (list(kinds),))
        counts = {kinds[name]: int(value) for name, value in cur.fetchall()}
    conn.close()
    return counts


Procs = list[subprocess.Popen[bytes] | None]


def throughput(args: argparse.Namespace, env: dict[str, str], url: str, mariadb: MariaDBServer,
               work: Path, lua: Path, procs: Procs) -> None:  # fmt: skip
    """triggerd's webhook route, the bare aiohttp ceiling and the naive handler under wrk."""
    port = free_port()
    trigger_id = insert_trigger(mariadb.port, "bench", None)

    def webhooks(extra: dict[str, str], log: str) -> dict[str, float]:
        daemon = start_daemon({**env, **extra}, "api", port, work / log)
        procs.append(daemon)
        found = run_wrk(f"http://127.0.0.1:{port}/api/v1/webhook/{trigger_id}", args.seconds,
                        args.connections, lua)  # fmt: skip
        stop(daemon)
        return found

    ours = webhooks({}, "daemon-api.log")
    print(f"triggerd webhook (validate + group commit + publish): "
          f"{ours['accepted_per_s']:,.0f} accepted req/s, p50 {ours['p50_ms']:.2f} ms, "
          f"p99 {ours['p99_ms']:.2f} ms, non-2xx {ours['non_2xx']}, "
          f"socket errors {ours['socket_errors']}")

    if args.without_lane:
        aio = webhooks({"TRIGGERD_WEBHOOK_FAST_LANE": "false"}, "daemon-api-aiohttp.log")
        print(f"  the same through aiohttp (TRIGGERD_WEBHOOK_FAST_LANE=false): "
              f"{aio['accepted_per_s']:,.0f} accepted req/s, p50 {aio['p50_ms']:.2f} ms, "
              f"p99 {aio['p99_ms']:.2f} ms; the lane's gain "
              f"{ours['accepted_per_s'] / aio['accepted_per_s']:.2f}x")

    cport = free_port()
    ceiling = subprocess.Popen(pinned(0, [sys.executable, __file__, "--ceiling-server",
                                          str(cport)]))  # fmt: skip
    procs.append(ceiling)
    time.sleep(1.5)
    top = run_wrk(f"http://127.0.0.1:{cport}/hook/x", args.seconds, args.connections, lua)
    stop(ceiling)
    print(f"ceiling (aiohttp: parse JSON, 202): {top['accepted_per_s']:,.0f} req/s, "
          f"p50 {top['p50_ms']:.2f} ms, p99 {top['p99_ms']:.2f} ms")
    print(f"ratio triggerd/ceiling: {ours['accepted_per_s'] / top['accepted_per_s']:.2f}")

    nport = free_port()
    naive = subprocess.Popen(pinned(0, [sys.executable, __file__, "--naive-server",
                                        str(nport), url]))  # fmt: skip
    procs.append(naive)
    time.sleep(1.5)
    plain = run_wrk(f"http://127.0.0.1:{nport}/hook/{trigger_id}", args.seconds,
                    args.connections, lua)  # fmt: skip
    stop(naive)
    print(f"naive (aiohttp + aiomysql, one INSERT per request, no validation or publish):"
          f" {plain['accepted_per_s']:,.0f} req/s, p50 {plain['p50_ms']:.2f} ms,"
          f" p99 {plain['p99_ms']:.2f} ms")
    print(f"ratio triggerd/naive: {ours['accepted_per_s'] / plain['accepted_per_s']:.2f}")



def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--e2e-rate", type=int, default=1000)
    parser.add_argument("--e2e-seconds", type=float, default=10.0)
    parser.add_argument("--e2e-only", action="store_true",
                        help="skip the throughput runs (triggerd, ceiling, naive)")
    parser.add_argument("--without-lane", action="store_true",
                        help="also run triggerd's webhook route with the fast lane off")
    parser.add_argument("--ceiling-server", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--sink", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--naive-server", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.ceiling_server:
        return ceiling_server(args.ceiling_server)
    if args.naive_server:
        return naive_server(int(args.naive_server[0]), args.naive_server[1])
    if args.sink:
        return sink_server(int(args.sink[0]), args.sink[1])

    work = Path(tempfile.mkdtemp(prefix="triggerd-bench-"))
    lua = work / "post.lua"
    lua.write_text(WRK_LUA % json.dumps(BODY))
    mariadb, broker = MariaDBServer(), KafkaBroker()
    procs: Procs = []
    try:
        mariadb.start()
        broker.start()
        url = mariadb.create_database("bench")
        env = {"TRIGGERD_DATABASE_URL": url, "TRIGGERD_KAFKA_BOOTSTRAP": broker.bootstrap,
               "TRIGGERD_KAFKA_TOPIC": "bench-events",
               "TRIGGERD_KAFKA_PARTITIONS": "3",
               # the sink is on loopback, which deliveries may reach only when allowed
               "TRIGGERD_DELIVERY_ALLOW_NETWORKS": "127.0.0.0/8"}  # fmt: skip
        subprocess.run([sys.executable, "-m", "triggerd", "migrate"], env={**os.environ, **env},
                       check=True, capture_output=True)  # fmt: skip
        print(describe())
        print(f"wrk -t1 -c{args.connections} -d{args.seconds}s (CPU 1), server on CPU 0")

        if not args.e2e_only:
            throughput(args, env, url, mariadb, work, lua, procs)

        sink_port, arrivals_file = free_port(), work / "arrivals.json"
        sink = subprocess.Popen([sys.executable, __file__, "--sink", str(sink_port),
                                 str(arrivals_file)])  # fmt: skip
        procs.append(sink)
        hook = insert_trigger(mariadb.port, "bench", f"http://127.0.0.1:{sink_port}/in")
        port = free_port()
        # A topic of its own: the throughput runs above left tens of thousands of jobs
        # on the first one, which a worker would have to consume first.
        env = {**env, "TRIGGERD_KAFKA_TOPIC": "bench-e2e"}
        daemon = start_daemon(env, "api", port, work / "daemon-e2e.log", cpu=None)
        procs.append(daemon)
        worker = start_daemon({**env, "TRIGGERD_KAFKA_SESSION_TIMEOUT": "6s",
                               "TRIGGERD_KAFKA_HEARTBEAT_INTERVAL": "1s"},
                              "worker", free_port(), work / "worker-e2e.log", cpu=None)  # fmt: skip
        procs.append(worker)
        hook_url = f"http://127.0.0.1:{port}/api/v1/webhook/{hook}"
        # Warm-up: the worker has joined its consumer group once one delivery succeeded.
        drive_open_loop(hook_url, 1, 1)
        wait_delivered(mariadb.port, "bench", hook, 1, timeout=60)
        cpu_before = {"api": cpu_seconds(daemon.pid), "worker": cpu_seconds(worker.pid),
                      "MariaDB": cpu_seconds(pid_of(mariadb)),
                      "broker": cpu_seconds(pid_of(broker))}  # fmt: skip
        statements_before = statement_counts(mariadb.port)
        sent = drive_open_loop(hook_url, args.e2e_rate, args.e2e_seconds)
        wait_delivered(mariadb.port, "bench", hook, len(sent) + 1, timeout=120)
        statements = {name: (count - statements_before.get(name, 0)) / max(1, len(sent))
                      for name, count in statement_counts(mariadb.port).items()}  # fmt: skip
        cpu_per_event = {
            name: (cpu_seconds(pid) - cpu_before[name]) / max(1, len(sent)) * 1e6
            for name, pid in (("api", daemon.pid), ("worker", worker.pid),
                              ("MariaDB", pid_of(mariadb)), ("broker", pid_of(broker)))
        }  # fmt: skip
        stop(sink)
        stop(daemon)
        stop(worker)
        arrivals = json.loads(arrivals_file.read_text())
        after_202 = [(arrivals[e] - t[1]) * 1000 for e, t in sent.items() if e in arrivals]
        after_send = [(arrivals[e] - t[0]) * 1000 for e, t in sent.items() if e in arrivals]
        print(f"end-to-end at {args.e2e_rate}/s for {args.e2e_seconds:.0f}s: "
              f"{len(sent)} accepted, {len(after_202)} delivered to the sink")
        stages = stage_times(mariadb.port, "bench", hook)
        steps = {"fired_at -> published (fast path: commit, publish, ack)": (0, 1),
                 "published -> attempt claimed (Kafka, the worker's fetch and claim)": (1, 2)}
        for label, (i, j) in steps.items():
            gaps = [(t[j] - t[i]) * 1000 for t in stages.values()]
            if gaps:
                print(f"  {label}: p50 {percentile(gaps, 50):.1f} ms,"
                      f" p99 {percentile(gaps, 99):.1f} ms")  # fmt: skip
        http = [(arrivals[e] - t[2]) * 1000 for e, t in stages.items() if e in arrivals]
        if http:
            print(f"  attempt claimed -> sink (the HTTP request): p50 {percentile(http, 50):.1f}"
                  f" ms, p99 {percentile(http, 99):.1f} ms")  # fmt: skip
        if after_202:
            print(f"  202 -> sink: p50 {percentile(after_202, 50):.1f} ms, "
                  f"p99 {percentile(after_202, 99):.1f} ms")
            print(f"  request sent -> sink: p50 {percentile(after_send, 50):.1f} ms, "
                  f"p99 {percentile(after_send, 99):.1f} ms")
        print("  MariaDB statements per webhook: " + ", ".join(
            f"{name} {per:.2f}" for name, per in statements.items()))
        print("  CPU per webhook: " + ", ".join(f"{name} {us:.0f} µs"
                                               for name, us in cpu_per_event.items())
              + f"; all {sum(cpu_per_event.values()):,.0f} µs")
    finally:
        for proc in procs:
            stop(proc)
        broker.close()
        mariadb.close()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
