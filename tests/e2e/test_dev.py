"""`triggerd dev`, the README's first command: a private MariaDB and broker, all roles,
one `name: URL` line each, and nothing left running after Ctrl-C."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from tests.sink import Sink
from tests.support import wait_until
from triggerd.devstack import free_port

pytestmark = pytest.mark.e2e


def children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # "pid (comm) state ppid …"; comm may hold spaces and parentheses
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.append(int(entry.name))
    return found


def listen_addresses(port: int) -> set[str]:
    """The local addresses of the sockets listening on `port` (from /proc/net/tcp*), as
    the kernel writes them: 0100007F is 127.0.0.1, 00000000 any IPv4 address."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            address, hex_port = fields[1].split(":")
            if int(hex_port, 16) == port and fields[3] == "0A":  # 0A: LISTEN
                found.add(address)
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


async def wait_dev_healthy(http: aiohttp.ClientSession, proc: subprocess.Popen[bytes],
                           base: str, log: Path) -> None:  # fmt: skip
    async def healthy() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"dev exited {proc.returncode}: {log.read_text()}")
        async with http.get(f"{base}/health") as resp:
            return resp.status == 200

    await wait_until(healthy, timeout=90, what="triggerd dev healthy")


async def test_dev_runs_everything_and_ctrl_c_leaves_nothing(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRIGGERD_")}
    env.update(TRIGGERD_HTTP_PORT=str(port), TRIGGERD_LOG_LEVEL="info")
    log = tmp_path / "dev.log"
    with open(log, "wb") as err:
        proc = subprocess.Popen([sys.executable, "-m", "triggerd", "dev"], env=env,
                                stdout=subprocess.PIPE, stderr=err)  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as http:
            await wait_dev_healthy(http, proc, base, log)
            servers = children_of(proc.pid)
            assert len(servers) >= 2, servers  # the private MariaDB and broker
            # Without TRIGGERD_HTTP_HOST the open API faces this machine only.
            assert listen_addresses(port) == {"0100007F"}, listen_addresses(port)

            # Deliveries may reach loopback in dev (and the log says so).
            async with Sink() as sink:
                create = {"name": "dev-local", "type": "webhook",
                          "config": {"endpoint": sink.url("/local")}}  # fmt: skip
                async with http.post(f"{base}/api/v1/triggers", json=create) as resp:
                    assert resp.status == 201, await resp.text()
                    local_id = (await resp.json())["id"]
                async with http.post(f"{base}/api/v1/webhook/{local_id}", json={}) as resp:
                    assert resp.status == 202, await resp.text()
                await sink.wait_for(1, path="/local", timeout=60)
            assert "deliveries may reach loopback" in log.read_text()

            create = {"name": "dev-hook", "type": "webhook", "config": {}}
            async with http.post(f"{base}/api/v1/triggers", json=create) as resp:
                assert resp.status == 201, await resp.text()
                trigger_id = (await resp.json())["id"]
            async with http.post(f"{base}/api/v1/webhook/{trigger_id}", json={"a": 1}) as resp:
                assert resp.status == 202, await resp.text()
                event_id = (await resp.json())["event_id"]

            async def published() -> bool:  # through Kafka and the worker: no endpoint
                async with http.get(f"{base}/api/v1/events/{event_id}") as resp:
                    body = await resp.json()
                    return resp.status == 200 and body.get("execution_status") == "published"

            await wait_until(published, timeout=60, what="the event consumed by the worker")

        proc.send_signal(signal.SIGINT)
        code = await asyncio.to_thread(proc.wait, 40)
        assert code == 0, log.read_text()[-5000:]
        assert proc.stdout is not None
        lines = proc.stdout.read().decode().splitlines()
        assert f"api: {base}/api/v1" in lines
        assert f"docs: {base}/api/docs" in lines
        assert f"console: {base}/ui" in lines
        assert f"health: {base}/health" in lines

        async def all_gone() -> bool:
            return not [pid for pid in servers if alive(pid)]

        await wait_until(all_gone, timeout=10, what="the private servers stopped")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _dev_env(port: int, tmpdir: Path) -> dict[str, str]:
    """A clean environment whose temp dirs (the private MariaDB's) land in `tmpdir`."""
    tmpdir.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRIGGERD_")}
    env.update(TRIGGERD_HTTP_PORT=str(port), TRIGGERD_LOG_LEVEL="info", TMPDIR=str(tmpdir))
    return env


async def test_double_ctrl_c_still_cleans_up_and_exits_zero(tmp_path: Path) -> None:
    port = free_port()
    tmpdir = tmp_path / "tmp"
    env = _dev_env(port, tmpdir)
    log = tmp_path / "dev.log"
    with open(log, "wb") as err:
        proc = subprocess.Popen([sys.executable, "-m", "triggerd", "dev"], env=env,
                                stdout=subprocess.DEVNULL, stderr=err)  # fmt: skip
    try:
        async with aiohttp.ClientSession() as http:
            await wait_dev_healthy(http, proc, f"http://127.0.0.1:{port}", log)
        servers = children_of(proc.pid)
        assert len(servers) >= 2, servers
        assert [p.name for p in tmpdir.iterdir()], "the private MariaDB's dir is in TMPDIR"

        proc.send_signal(signal.SIGINT)
        await asyncio.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        code = await asyncio.to_thread(proc.wait, 40)
        assert code == 0, log.read_text()[-5000:]
        assert not [pid for pid in servers if alive(pid)]
        assert list(tmpdir.iterdir()) == []
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_dev_on_a_taken_port_fails_with_one_line_and_cleans_up(tmp_path: Path) -> None:
    tmpdir = tmp_path / "tmp"
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "triggerd", "dev"], env=_dev_env(port, tmpdir),
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("triggerd: TRIGGERD_HTTP_PORT: cannot listen on "), result.stderr
    assert list(tmpdir.iterdir()) == []
