"""Shared fixtures: one private MariaDB and one broker per test session (or the servers
named by TRIGGERD_TEST_DATABASE_URL / TRIGGERD_TEST_KAFKA_BOOTSTRAP); every test gets
its own database and its own topic and consumer group."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pymysql
import pytest

from tests.sink import Sink
from tests.support import ALLOW_LOOPBACK, Daemon
from triggerd.config import DatabaseUrl, Settings, load_settings
from triggerd.devstack import KafkaBroker, MariaDBServer
from triggerd.store.db import Database
from triggerd.store.migrations import migrate


class DatabaseServer:
    """Where test databases are created: the private server or TRIGGERD_TEST_DATABASE_URL."""

    def __init__(self, base_url: str, server: MariaDBServer | None) -> None:
        self.base = DatabaseUrl.parse(base_url)
        self.server = server

    def connect(self) -> pymysql.Connection:  # type: ignore[type-arg]
        return pymysql.connect(host=self.base.host, port=self.base.port, user=self.base.user,
                               password=self.base.password, autocommit=True)  # fmt: skip

    def create(self) -> str:
        name = f"t_{uuid.uuid4().hex[:12]}"
        conn = self.connect()
        with conn.cursor() as cur:
            cur.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
        conn.close()
        b = self.base
        auth = b.user + (f":{b.password}" if b.password else "")
        return f"mysql://{auth}@{b.host}:{b.port}/{name}"

    async def create_migrated(self) -> str:
        """A new database with every migration applied."""
        url = self.create()
        db = Database(DatabaseUrl.parse(url), pool_size=2)
        await db.connect()
        try:
            await migrate(db)
        finally:
            await db.close()
        return url

    def drop(self, url: str) -> None:
        name = DatabaseUrl.parse(url).database
        conn = self.connect()
        with conn.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
        conn.close()


@pytest.fixture(scope="session")
def db_server() -> Iterator[DatabaseServer]:
    given = os.environ.get("TRIGGERD_TEST_DATABASE_URL")
    if given:
        yield DatabaseServer(given, None)
        return
    server = MariaDBServer()
    server.start()
    try:
        yield DatabaseServer(server.url("mysql"), server)
    finally:
        server.close()


@pytest.fixture(scope="session")
def kafka_broker() -> Iterator[KafkaBroker | str]:
    given = os.environ.get("TRIGGERD_TEST_KAFKA_BOOTSTRAP")
    if given:
        yield given
        return
    broker = KafkaBroker()
    broker.start()
    try:
        yield broker
    finally:
        broker.close()


@pytest.fixture(scope="session")
def kafka_bootstrap(kafka_broker: KafkaBroker | str) -> str:
    return kafka_broker if isinstance(kafka_broker, str) else kafka_broker.bootstrap


@pytest.fixture
async def database_url(db_server: DatabaseServer) -> AsyncIterator[str]:
    """A fresh, migrated database for this test."""
    url = await db_server.create_migrated()
    yield url
    db_server.drop(url)


@pytest.fixture
async def sink() -> AsyncIterator[Sink]:
    """A local HTTP target that records what it receives (tests/sink.py)."""
    async with Sink() as running:
        yield running


@pytest.fixture
def topic() -> str:
    return f"jobs-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def base_env(database_url: str, kafka_bootstrap: str, topic: str) -> dict[str, str]:
    """The environment of a daemon under test: fast timings, own topic and group."""
    return {
        "TRIGGERD_DATABASE_URL": database_url,
        "TRIGGERD_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "TRIGGERD_KAFKA_TOPIC": topic,
        "TRIGGERD_KAFKA_GROUP": f"g-{topic}",
        "TRIGGERD_KAFKA_PARTITIONS": "3",
        "TRIGGERD_KAFKA_SESSION_TIMEOUT": "6s",
        "TRIGGERD_KAFKA_HEARTBEAT_INTERVAL": "1s",
        "TRIGGERD_SCHEDULER_RECONCILE_INTERVAL": "500ms",
        "TRIGGERD_SCHEDULER_LEASE": "5s",
        "TRIGGERD_SHUTDOWN_TIMEOUT": "5s",
        "TRIGGERD_LOG_FORMAT": "json",
        "TRIGGERD_DELIVERY_ALLOW_NETWORKS": ALLOW_LOOPBACK,
    }


@pytest.fixture
def settings_for(base_env: dict[str, str]) -> Any:
    def make(**overrides: Any) -> Settings:
        return load_settings(base_env, overrides=overrides)

    return make


@pytest.fixture
async def own_database_server(db_server: DatabaseServer) -> AsyncIterator[MariaDBServer]:
    """A MariaDB of the test's own, to stop, hang or restart."""
    if db_server.server is None:
        pytest.skip("needs a private MariaDB to stop and start")
    server = MariaDBServer()
    await asyncio.to_thread(server.start)
    yield server
    await asyncio.to_thread(server.close)


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    """A pool on this test's database, for assertions straight against the tables."""
    database = Database(DatabaseUrl.parse(database_url), pool_size=4)
    await database.connect()
    yield database
    await database.close()


@pytest.fixture
def start_daemon(base_env: dict[str, str], tmp_path: Path) -> Iterator[Any]:
    """Factory: start `triggerd run` subprocesses; all are stopped at the end of the test."""
    started: list[Daemon] = []

    def start(roles: str | None = None, env: dict[str, str] | None = None,
              args: list[str] | None = None) -> Daemon:  # fmt: skip
        daemon = Daemon({**base_env, **(env or {})}, tmp_path, roles=roles, args=args)
        started.append(daemon.start())
        return daemon

    yield start
    for daemon in started:
        daemon.kill()
