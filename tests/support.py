"""Test helpers: deadline polling, the daemon as a subprocess, reading the job topic."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar, cast

import aiohttp
import orjson
from aiokafka import AIOKafkaConsumer

from triggerd.devstack import free_port

T = TypeVar("T")

# Deliveries reach public addresses only unless allowed; the tests' targets (tests/sink.py)
# listen on loopback, so every test daemon and worker allows it explicitly.
ALLOW_LOOPBACK = "127.0.0.0/8,::1/128"


async def wait_until(
    probe: Callable[[], Awaitable[T]], *, timeout: float = 15.0, interval: float = 0.05,
    what: str = "condition",
) -> T:  # fmt: skip
    """Poll `probe` until it returns something truthy; fail with `what` at the deadline."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            last = await probe()
        except (aiohttp.ClientError, OSError) as exc:
            last = exc
        if last and not isinstance(last, BaseException):
            return cast(T, last)
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")
        await asyncio.sleep(interval)


class Daemon:
    """`triggerd run` in a subprocess with its own port; logs go to a file."""

    def __init__(self, env: dict[str, str], log_dir: Path, roles: str | None = None,
                 args: list[str] | None = None) -> None:  # fmt: skip
        self.port = int(env.get("TRIGGERD_HTTP_PORT") or free_port())
        self.env = {**os.environ, **env, "TRIGGERD_HTTP_PORT": str(self.port)}
        self.env.setdefault("TRIGGERD_PUBLIC_URL", f"http://127.0.0.1:{self.port}")
        self.env.setdefault("TRIGGERD_LOG_LEVEL", "info")
        self.args = ["run", *(["--roles", roles] if roles else []), *(args or [])]
        self.log_path = log_dir / f"daemon-{uuid.uuid4().hex[:8]}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Daemon:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "triggerd", *self.args],
                env=self.env, stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        return self

    async def wait_healthy(self, timeout: float = 30.0) -> None:
        async with aiohttp.ClientSession() as http:

            async def probe() -> bool:
                assert self.proc is not None
                if self.proc.poll() is not None:
                    raise AssertionError(f"daemon exited {self.proc.returncode}:\n{self.logs()}")
                async with http.get(f"{self.url}/health") as resp:
                    return resp.status == 200

            await wait_until(probe, timeout=timeout, what=f"{self.url}/health == 200")

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")[-20000:]

    def terminate(self, timeout: float = 15.0) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


async def read_jobs(bootstrap: str, topic: str, *, count: int, timeout: float = 20.0,
                    match: Callable[[dict[str, Any]], bool] | None = None,
                    ) -> list[dict[str, Any]]:  # fmt: skip
    """Read the topic from the start until `count` matching jobs arrived (or the deadline);
    returns every matching job seen, with `_timestamp` (ms), `_key` and `_headers` added."""
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest",
        enable_auto_commit=False,
    )  # fmt: skip
    await consumer.start()
    found: list[dict[str, Any]] = []
    try:
        deadline = time.monotonic() + timeout
        while len(found) < count and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=200)
            for records in batch.values():
                for record in records:
                    job = orjson.loads(record.value)
                    job["_timestamp"] = record.timestamp
                    job["_key"] = record.key.decode() if record.key else None
                    job["_headers"] = {k: v.decode("utf-8", "replace")
                                       for k, v in record.headers}  # fmt: skip
                    if match is None or match(job):
                        found.append(job)
    finally:
        await consumer.stop()
    return found
