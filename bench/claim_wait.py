"""How long a published job waits for a worker to claim its delivery attempt, in steady
state and across a worker killed with SIGKILL: the worst case TRIGGERD_REDELIVER_AFTER
must stay above (a job still waiting for its claim after that is published again).

    python bench/claim_wait.py [--rate 100] [--seconds 40] [--kill-at 15]

Starts a private MariaDB and broker (triggerd.devstack), `triggerd run --roles api` and
two `--roles worker` processes (default Kafka session timeout: 10 s; the backstop set to
10 minutes so it stays out of the way), a local HTTP sink, and posts webhooks at
`--rate`/s for `--seconds`. At `--kill-at` one worker gets SIGKILL: the jobs it fetched
but had not claimed wait until the group notices and hands its partitions over. Prints
the wait from `published_at` to the attempt's `started_at`: p50/p99/max overall, and
the max for jobs published within 5 s of the kill.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from machine import describe  # noqa: E402  (bench/machine.py, beside this script)

from triggerd.devstack import KafkaBroker, MariaDBServer, free_port  # noqa: E402


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


def daemon(env: dict[str, str], roles: str, log_dir: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    log = open(log_dir / f"{roles}-{port}.log", "ab")  # noqa: SIM115 - the child's
    proc = subprocess.Popen([sys.executable, "-m", "triggerd", "run", "--roles", roles],
                            env={**os.environ, **env, "TRIGGERD_HTTP_PORT": str(port)},
                            stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
    log.close()
    return proc, port


async def wait_healthy(port: int, timeout: float = 60) -> None:
    import aiohttp

    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            with contextlib.suppress(aiohttp.ClientError, OSError):
                async with http.get(f"http://127.0.0.1:{port}/health") as resp:
                    if resp.status == 200:
                        return
            await asyncio.sleep(0.2)
    raise SystemExit(f"daemon on {port} did not become healthy")


async def run(args: argparse.Namespace, url: str, bootstrap: str, log_dir: Path) -> None:
    import aiohttp
    import pymysql
    from aiohttp import web

    env = {"TRIGGERD_DATABASE_URL": url, "TRIGGERD_KAFKA_BOOTSTRAP": bootstrap,
           "TRIGGERD_REDELIVER_AFTER": "10m", "TRIGGERD_LOG_LEVEL": "warning"}  # fmt: skip
    app = web.Application()

    async def ok(_request: web.Request) -> web.Response:
        return web.json_response({})

    app.router.add_post("/sink", ok)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    sink_port = free_port()
    await web.TCPSite(runner, "127.0.0.1", sink_port).start()
    procs = [daemon(env, roles, log_dir) for roles in ("api", "worker", "worker")]
    try:
        for _, port in procs:
            await wait_healthy(port)
        api = f"http://127.0.0.1:{procs[0][1]}"
        async with aiohttp.ClientSession() as http:
            body = {"name": "wait", "type": "webhook",
                    "config": {"endpoint": f"http://127.0.0.1:{sink_port}/sink"}}  # fmt: skip
            async with http.post(f"{api}/api/v1/triggers", json=body) as resp:
                trigger_id = (await resp.json())["id"]
            await asyncio.sleep(5)  # both workers in the group
            started, sent, killed_at = time.monotonic(), 0, None
            while (elapsed := time.monotonic() - started) < args.seconds:
                if killed_at is None and elapsed >= args.kill_at:
                    procs[1][0].send_signal(signal.SIGKILL)
                    killed_at = time.time()
                async with http.post(f"{api}/api/v1/webhook/{trigger_id}", json={}) as resp:
                    sent += resp.status == 202
                await asyncio.sleep(max(0.0, (sent + 1) / args.rate - elapsed))
        db = pymysql.connect(host="127.0.0.1", port=int(url.rsplit(":", 1)[1].split("/")[0]),
                             user="root", database=url.rsplit("/", 1)[1])  # fmt: skip
        deadline = time.monotonic() + 120
        rows: list[tuple[float, float]] = []
        while time.monotonic() < deadline:
            with db.cursor() as cur:
                cur.execute(
                    "SELECT UNIX_TIMESTAMP(e.published_at),"
                    " TIMESTAMPDIFF(MICROSECOND, e.published_at, a.started_at) / 1e6"
                    " FROM event_logs e JOIN delivery_attempts a ON a.event_id = e.id"
                    " AND a.attempt = 1 WHERE e.published_at IS NOT NULL")
                rows = [(float(p), float(w)) for p, w in cur.fetchall()]
            db.commit()
            if len(rows) >= sent:
                break
            await asyncio.sleep(1)
        waits = [w for _, w in rows]
        print(f"{sent} webhooks at {args.rate:g}/s, a worker killed at {args.kill_at:g}s;"
              f" {len(rows)} claimed")  # fmt: skip
        print(f"published -> claimed: p50 {percentile(waits, 0.5) * 1000:.0f} ms,"
              f" p99 {percentile(waits, 0.99) * 1000:.0f} ms, max {max(waits):.1f} s")
        if killed_at is not None:
            after = [(p - killed_at, w) for p, w in rows if p >= killed_at - 1]
            worst = max(after, key=lambda item: item[1], default=(0.0, 0.0))
            print(f"published from 1 s before the kill on: {len(after)} jobs, the longest"
                  f" wait {worst[1]:.1f} s (published {worst[0]:+.1f} s from the kill)")
    finally:
        for proc, _ in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc, _ in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(20)
            if proc.poll() is None:
                proc.kill()
        await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=100.0, help="webhooks a second")
    parser.add_argument("--seconds", type=float, default=40.0)
    parser.add_argument("--kill-at", type=float, default=15.0, help="seconds in")
    args = parser.parse_args()
    print(describe())
    mariadb, broker = MariaDBServer(), KafkaBroker()
    mariadb.start()
    broker.start()
    try:
        url = mariadb.create_database("claimwait")
        subprocess.run([sys.executable, "-m", "triggerd", "migrate"], check=True,
                       env={**os.environ, "TRIGGERD_DATABASE_URL": url})  # fmt: skip
        with tempfile.TemporaryDirectory(prefix="claim-wait-") as logs:
            asyncio.run(run(args, url, broker.bootstrap, Path(logs)))
    finally:
        broker.close()
        mariadb.close()


if __name__ == "__main__":
    main()
