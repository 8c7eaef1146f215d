"""The daemon as an operator meets it: start, health, roles, signals, bad settings."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.support import Daemon, wait_until
from triggerd.config import DatabaseUrl
from triggerd.devstack import MariaDBServer

pytestmark = pytest.mark.e2e


async def get_health(daemon: Daemon) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as http, http.get(f"{daemon.url}/health") as resp:
        return resp.status, await resp.json()


async def test_sigterm_exits_zero_quickly(start_daemon: Any) -> None:
    daemon = start_daemon()
    await daemon.wait_healthy()
    status, body = await get_health(daemon)
    assert status == 200
    assert body["checks"]["roles"] == {
        "api": "ok", "scheduler": "ok", "worker": "ok", "retention": "ok"
    }
    assert body["checks"]["components"] == {"ingest": "ok", "outbox_relay": "ok"}
    started = time.monotonic()
    code = await asyncio.to_thread(daemon.terminate, 15)
    assert code == 0, daemon.logs()
    assert time.monotonic() - started < 10
    assert "shutting down" in daemon.logs()


async def test_roles_flag_runs_only_the_api(start_daemon: Any, db: Any) -> None:
    daemon = start_daemon(roles="api")
    await daemon.wait_healthy()
    _, body = await get_health(daemon)
    assert body["checks"]["roles"] == {"api": "ok"}
    assert body["checks"]["components"] == {"ingest": "ok", "outbox_relay": "ok"}
    async with aiohttp.ClientSession() as http:
        create = {
            "name": "soon", "type": "time_scheduled",
            "config": {"run_in": "1s", "endpoint": "http://127.0.0.1:9/x"},
        }
        async with http.post(f"{daemon.url}/api/v1/triggers", json=create) as resp:
            assert resp.status == 201, await resp.text()
    # Well past the due time, nothing was claimed or fired: no scheduler runs here.
    await asyncio.sleep(0)  # let the request's transaction settle before the deadline poll
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        rows = await db.fetchall("SELECT status FROM trigger_schedules")
        assert [r["status"] for r in rows] == ["pending"]
        events = await db.fetchone("SELECT COUNT(*) AS n FROM event_logs")
        assert events["n"] == 0
        await asyncio.sleep(0.25)


def migrated_database(server: MariaDBServer) -> str:
    """A database on `server`, migrated by `triggerd migrate` as an operator would."""
    url = server.create_database("own")
    migrate = subprocess.run(
        [sys.executable, "-m", "triggerd", "migrate"],
        env={**os.environ, "TRIGGERD_DATABASE_URL": url}, capture_output=True, text=True,
    )  # fmt: skip
    assert migrate.returncode == 0, migrate.stderr
    return url


async def test_health_follows_the_database(start_daemon: Any, tmp_path: Path,
                                           kafka_bootstrap: str) -> None:  # fmt: skip
    server = MariaDBServer(base_dir=tmp_path / "db")
    server.start()
    try:
        url = migrated_database(server)
        daemon = start_daemon(env={"TRIGGERD_DATABASE_URL": url})
        await daemon.wait_healthy()
        await asyncio.to_thread(server.stop)

        async def unhealthy() -> dict[str, Any] | None:
            status, body = await get_health(daemon)
            return body if status == 503 else None

        body = await wait_until(unhealthy, timeout=15, what="/health 503")
        assert body["checks"]["database"].startswith("down")
        assert "database" in body["failing"]

        await asyncio.to_thread(server.start)
        await daemon.wait_healthy(timeout=30)
        assert daemon.proc.poll() is None  # recovered without a restart
    finally:
        server.close()


@pytest.mark.parametrize(
    ("env", "key"),
    [
        ({"TRIGGERD_HTTP_PORT": "eighty"}, "TRIGGERD_HTTP_PORT"),
        ({"TRIGGERD_RETENTION_INTERVAL": "soon"}, "TRIGGERD_RETENTION_INTERVAL"),
        ({"TRIGGERD_ROLES": "api,cron"}, "TRIGGERD_ROLES"),
        ({"TRIGGERD_NO_SUCH_THING": "1"}, "TRIGGERD_NO_SUCH_THING"),
        ({"TRIGGERD_DATABASE_URL": "postgres://x/y"}, "TRIGGERD_DATABASE_URL"),
    ],
)
def test_bad_setting_fails_with_one_line(env: dict[str, str], key: str,
                                         base_env: dict[str, str]) -> None:  # fmt: skip
    result = subprocess.run(
        [sys.executable, "-m", "triggerd", "run"],
        env={**os.environ, **base_env, **env}, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert key in lines[0]


def test_bad_key_in_config_file(tmp_path: Path, base_env: dict[str, str]) -> None:
    config = tmp_path / "t.toml"
    config.write_text('http_port = 8080\nretention_archive_after = "2h"\nbogus_key = 1\n')
    result = subprocess.run(
        [sys.executable, "-m", "triggerd", "run", "--config", str(config)],
        env={**os.environ, **base_env}, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert "bogus_key" in result.stderr


def test_run_refuses_an_unmigrated_database(db_server: Any, base_env: dict[str, str]) -> None:
    url = db_server.create()
    try:
        result = subprocess.run(
            [sys.executable, "-m", "triggerd", "run"],
            env={**os.environ, **base_env, "TRIGGERD_DATABASE_URL": url,
                 "TRIGGERD_HTTP_PORT": str(_free_port())},
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert result.returncode == 2
        assert "triggerd migrate" in result.stderr
    finally:
        db_server.drop(url)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_waits_for_a_database_that_is_down_at_start_up(
    start_daemon: Any, tmp_path: Path
) -> None:
    server = MariaDBServer(base_dir=tmp_path / "db")
    server.start()
    try:
        url = migrated_database(server)
        await asyncio.to_thread(server.stop)  # down before the daemon starts

        daemon = start_daemon(env={"TRIGGERD_DATABASE_URL": url})

        async def unhealthy() -> dict[str, Any] | None:
            assert daemon.proc.poll() is None, daemon.logs()
            status, body = await get_health(daemon)
            return body if status == 503 else None

        body = await wait_until(unhealthy, timeout=15, what="/health 503 while the db is down")
        assert body["checks"]["database"].startswith("down")
        assert "database" in body["failing"]
        await asyncio.sleep(1.5)  # retrying, not exiting
        assert daemon.proc.poll() is None, daemon.logs()
        triggers = f"{daemon.url}/api/v1/triggers"
        async with aiohttp.ClientSession() as http, http.get(triggers) as resp:
            assert resp.status == 503, await resp.text()  # the API says "later", not 500

        await asyncio.to_thread(server.start)
        await daemon.wait_healthy(timeout=30)
        assert "Traceback" not in daemon.logs()
        assert await asyncio.to_thread(daemon.terminate, 15) == 0, daemon.logs()
    finally:
        server.close()


async def test_sigterm_while_waiting_for_the_database_exits_zero(
    start_daemon: Any
) -> None:
    daemon = start_daemon(env={"TRIGGERD_DATABASE_URL": f"mysql://root@127.0.0.1:{_free_port()}/x"})

    async def unhealthy() -> bool:
        assert daemon.proc.poll() is None, daemon.logs()
        status, _ = await get_health(daemon)
        return status == 503

    await wait_until(unhealthy, timeout=15, what="/health 503")
    assert await asyncio.to_thread(daemon.terminate, 10) == 0, daemon.logs()
    assert "Traceback" not in daemon.logs()


async def test_second_signal_exits_zero_at_once(start_daemon: Any) -> None:
    daemon = start_daemon()
    await daemon.wait_healthy()
    daemon.proc.send_signal(signal.SIGTERM)
    await asyncio.sleep(0.05)
    daemon.proc.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(daemon.proc.wait, 15) == 0, daemon.logs()


@pytest.fixture
def unprivileged_url(db_server: Any, database_url: str) -> Iterator[str]:
    """A user that exists but may not use this test's database (MySQL error 1044)."""
    user = f"np_{uuid.uuid4().hex[:8]}"
    conn = db_server.connect()
    with conn.cursor() as cur:
        cur.execute(f"CREATE USER '{user}'@'%' IDENTIFIED BY 'pw'")
        cur.execute(f"CREATE USER '{user}'@'localhost' IDENTIFIED BY 'pw'")
    b = DatabaseUrl.parse(database_url)
    yield f"mysql://{user}:pw@{b.host}:{b.port}/{b.database}"
    with conn.cursor() as cur:
        cur.execute(f"DROP USER IF EXISTS '{user}'@'%'")
        cur.execute(f"DROP USER IF EXISTS '{user}'@'localhost'")
    conn.close()


def _bad_database_urls(database_url: str, unprivileged_url: str) -> dict[str, str]:
    b = DatabaseUrl.parse(database_url)
    return {
        "unknown database": f"mysql://{b.user}:{b.password}@{b.host}:{b.port}/no_such_db_x",
        "bad credentials": f"mysql://nobody_x:wrong@{b.host}:{b.port}/{b.database}",
        "no privilege": unprivileged_url,
    }


@pytest.mark.parametrize("command", ["migrate", "run"])
@pytest.mark.parametrize("case", ["unknown database", "bad credentials", "no privilege"])
def test_a_database_url_the_server_rejects_fails_with_one_line(
    command: str, case: str, base_env: dict[str, str], database_url: str,
    unprivileged_url: str,
) -> None:  # fmt: skip
    url = _bad_database_urls(database_url, unprivileged_url)[case]
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "triggerd", command],
        env={**os.environ, **base_env, "TRIGGERD_DATABASE_URL": url,
             "TRIGGERD_HTTP_PORT": str(_free_port())},
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert time.monotonic() - started < 20  # no retrying forever
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("triggerd: TRIGGERD_DATABASE_URL: "), result.stderr
    assert "wrong" not in last  # the password stays redacted
    if command == "migrate":
        assert result.stderr.strip() == last


@pytest.mark.parametrize(
    ("env", "key"),
    [
        ({"TRIGGERD_HTTP_HOST": "999.1.1.1"}, "TRIGGERD_HTTP_HOST"),
        ({"TRIGGERD_HTTP_HOST": "192.0.2.1"}, "TRIGGERD_HTTP_HOST"),  # not ours (TEST-NET-1)
        ({}, "TRIGGERD_HTTP_PORT"),  # taken
    ],
)
def test_cannot_listen_fails_with_one_line(env: dict[str, str], key: str) -> None:
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "triggerd", "run"],
            env={**os.environ, "TRIGGERD_DATABASE_URL": "mysql://root@127.0.0.1:1/x",
                 "TRIGGERD_HTTP_PORT": str(port), **env},
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"triggerd: {key}: cannot listen on "), result.stderr
    if not env:
        assert last.endswith(f":{port}: address already in use")
