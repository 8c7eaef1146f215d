"""Under systemd (Type=notify): READY=1 once every role is up, watchdog pings, then
STOPPING=1 on SIGTERM — seen through a real datagram socket as NOTIFY_SOCKET."""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.e2e


async def test_ready_watchdog_stopping(start_daemon: Any, tmp_path: Path) -> None:
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.setblocking(False)
    loop = asyncio.get_running_loop()

    async def recv(timeout: float) -> str:
        async with asyncio.timeout(timeout):
            return (await loop.sock_recv(sock, 4096)).decode()

    try:
        # 1 s watchdog deadline: pings every 0.5 s. WATCHDOG_PID is left unset (the
        # subprocess's pid is not known before it starts; systemd allows that).
        daemon = start_daemon(env={"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "1000000"})
        messages = []
        deadline = time.monotonic() + 30
        while not any(m.startswith("READY=1") for m in messages):
            messages.append(await recv(deadline - time.monotonic()))
        await daemon.wait_healthy()  # READY only after every role is up
        pings_after_ready = 0
        while pings_after_ready < 3:
            if await recv(5) == "WATCHDOG=1":
                pings_after_ready += 1
        daemon.proc.send_signal(15)
        seen = []
        while "STOPPING=1" not in seen:
            seen.append(await recv(10))
        assert await asyncio.to_thread(daemon.proc.wait, 15) == 0
    finally:
        sock.close()
