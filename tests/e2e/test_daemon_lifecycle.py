"""The daemon as an operator meets it: start, health, roles, signals, bad settings."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.support import Daemon, wait_until
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


async def test_health_follows_the_database(start_daemon: Any, tmp_path: Path,
                                           kafka_bootstrap: str) -> None:  # fmt: skip
    server = MariaDBServer(base_dir=tmp_path / "db")
    server.start()
    try:
        url = server.create_database("own")
        migrate = subprocess.run(
            [sys.executable, "-m", "triggerd", "migrate"],
            env={**os.environ, "TRIGGERD_DATABASE_URL": url}, capture_output=True, text=True,
        )  # fmt: skip
        assert migrate.returncode == 0, migrate.stderr
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
