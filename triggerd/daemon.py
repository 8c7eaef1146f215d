"""The composition root of `triggerd run`: builds the pool, the producer, the HTTP
server and the roles once, passes them explicitly, and owns the shutdown order.

Shutdown (SIGTERM/SIGINT), as uvicorn does it: stop accepting HTTP and let in-flight
requests finish, then cancel the roles (each stops intake and drains up to
`shutdown_timeout`), then flush the producer and close the pool. A second signal
exits at once (still 0: the operator asked for the stop; leases and uncommitted
offsets hand the unfinished work to another process).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import signal
import sys
from collections.abc import Callable
from typing import NoReturn

from triggerd.api.app import build_app
from triggerd.api.server import AppRunner, make_site
from triggerd.bus.producer import Bus
from triggerd.config import Settings
from triggerd.domain.backoff import Backoff
from triggerd.domain.errors import ConfigError, SchemaVersionError
from triggerd.gauges import refresh_forever as refresh_gauges
from triggerd.gctune import settle_after_startup
from triggerd.ingest.pipeline import IngestPipeline
from triggerd.metrics import Metrics
from triggerd.relay import OutboxRelay
from triggerd.services import Services
from triggerd.store.db import Database, url_error
from triggerd.store.migrations import check_schema
from triggerd.supervisor import Component, Role, RoleCrashLoop, Supervisor
from triggerd.systemd import Notifier
from triggerd.tracing import build_tracer

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_CRASH = 1
EXIT_CONFIG = 2

_KAFKA_ROLES = {"api", "scheduler", "worker"}


def build_components(services: Services) -> tuple[IngestPipeline | None, OutboxRelay | None]:
    """The background work this process's roles depend on: the ingestion pipeline where
    the `api` role runs, and one outbox relay where the `api` or `worker` role runs (the
    relay publishes what a fast path could not and the worker's retries; one per process
    is enough, several processes share the table safely)."""
    roles = set(services.settings.roles)
    ingest = None
    if "api" in roles:
        ingest = IngestPipeline(services.db, services.bus, services.metrics, services.tracer)
    relay = OutboxRelay(services) if roles & {"api", "worker"} else None
    return ingest, relay


def build_roles(services: Services, relay: OutboxRelay | None = None) -> list[Role]:
    """One object per configured role; modules load only for the roles this process runs."""
    roles: list[Role] = []
    for name in services.settings.roles:
        if name == "api":
            from triggerd.api.role import ApiRole

            roles.append(ApiRole(services))
        elif name == "scheduler":
            from triggerd.scheduler.loop import SchedulerRole

            roles.append(SchedulerRole(services))
        elif name == "worker":
            from triggerd.worker.role import WorkerRole

            assert relay is not None, "build_components gives a worker process a relay"
            roles.append(WorkerRole(services, relay))
        elif name == "retention":
            from triggerd.retention import RetentionRole

            roles.append(RetentionRole(services))
    return roles


async def _wait_for_database(db: Database, stop: asyncio.Event) -> bool:
    """Connect and check the schema, retrying with backoff while the server is down
    (the HTTP server is up meanwhile, /health naming the database). Returns False if
    asked to stop first. Fatal, as ConfigError or SchemaVersionError: a URL the server
    rejects (no such database, bad credentials, no privilege) and a wrong schema."""
    backoff = Backoff(base=0.5, cap=10.0)
    while not stop.is_set():
        try:
            if not db.connected:
                await db.connect()
            await db.ping()
            await check_schema(db)
            return True
        except SchemaVersionError:
            raise
        except Exception as exc:
            fatal = url_error(db.url, exc)
            if fatal is not None:
                raise fatal from None
            delay = backoff.next()
            log.warning("database unavailable (%s); retrying in %.1fs", exc, delay)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await stop.wait()
    return False


async def _listen(runner: AppRunner, settings: Settings) -> None:
    """Start the HTTP site; a port in use or a host we cannot bind is a bad setting."""
    host, port = settings.http_host, settings.http_port
    site = make_site(runner, host, port, fast_lane=settings.webhook_fast_lane,
                     shutdown_timeout=settings.shutdown_timeout)  # fmt: skip
    try:
        await site.start()
    except OSError as exc:
        if exc.errno is not None and exc.errno > 0:
            reason = os.strerror(exc.errno).lower()
        else:  # getaddrinfo (socket.gaierror) numbers its errors apart
            reason = str(exc.strerror or exc).lower()
        bad_port = exc.errno in (errno.EADDRINUSE, errno.EACCES)
        key = "TRIGGERD_HTTP_PORT" if bad_port else "TRIGGERD_HTTP_HOST"
        raise ConfigError(f"{key}: cannot listen on {host}:{port}: {reason}") from None


def _exit_now(code: int) -> NoReturn:
    """Leave at once (a second signal): no drain, no waiting on anything."""
    with contextlib.suppress(Exception):
        logging.shutdown()  # flush the log handlers
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(code)


async def serve(
    settings: Settings,
    notifier: Notifier | None = None,
    on_force_exit: Callable[[], None] | None = None,
) -> int:
    """Run the configured roles until SIGTERM/SIGINT. A second signal exits 0 at once,
    after `on_force_exit()` (synchronous cleanup: `triggerd dev` stops its servers)."""
    notifier = notifier or Notifier()
    metrics = Metrics()
    db = Database(settings.database, pool_size=settings.db_pool_size)
    bus = Bus(settings)
    services = Services(
        settings=settings,
        db=db,
        bus=bus,
        metrics=metrics,
        uses_kafka=bool(_KAFKA_ROLES & set(settings.roles)),
        tracer=build_tracer(settings.otel, settings.instance_id),
    )
    def all_ready() -> None:
        settle_after_startup()
        notifier.ready()

    ingest, relay = build_components(services)
    components = [Component(name, work.run) for name, work in
                  (("ingest", ingest), ("outbox_relay", relay)) if work is not None]  # fmt: skip
    supervisor = Supervisor(build_roles(services, relay), components=components,
                            on_all_ready=all_ready)  # fmt: skip
    services.role_states = supervisor.role_states
    services.component_states = supervisor.component_states

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    signals_seen = 0

    def on_signal(signum: int) -> None:
        nonlocal signals_seen
        signals_seen += 1
        if signals_seen > 1:
            log.warning("second %s: exiting now, without draining", signal.Signals(signum).name)
            if on_force_exit is not None:
                with contextlib.suppress(Exception):
                    on_force_exit()
            _exit_now(EXIT_OK)
        log.info("%s received; shutting down", signal.Signals(signum).name)
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)

    keys = settings.all_api_keys()
    if not keys:
        log.warning("TRIGGERD_API_KEYS is not set: the API is open to anyone who can reach it")
    else:  # names and scopes only: a key itself is never logged
        log.info("API keys: %s", ", ".join(f"{key.name} ({key.scope})" for key in keys))

    app = build_app(services, with_api="api" in settings.roles, ingest=ingest)
    runner = AppRunner(
        app, handle_signals=False, access_log=None, shutdown_timeout=settings.shutdown_timeout
    )
    await runner.setup()
    exit_code = EXIT_OK
    try:
        await _listen(runner, settings)
        log.info(
            "triggerd listening on %s:%d with roles %s",
            settings.http_host,
            settings.http_port,
            ",".join(settings.roles),
        )
        if not await _wait_for_database(db, stop):
            return EXIT_OK
        async with asyncio.TaskGroup() as group:
            bus_task = group.create_task(bus.run(), name="kafka") if services.uses_kafka else None
            roles_task = group.create_task(supervisor.run(), name="supervisor")
            watchdog = (
                group.create_task(_watchdog(notifier), name="watchdog")
                if notifier.watchdog_interval
                else None
            )
            gauges = group.create_task(refresh_gauges(services), name="gauges")
            stop_task = group.create_task(stop.wait(), name="stop-signal")
            await asyncio.wait({roles_task, stop_task}, return_when=asyncio.FIRST_COMPLETED)
            notifier.stopping()
            if roles_task.done() and not roles_task.cancelled():
                exc = roles_task.exception()
                if isinstance(exc, RoleCrashLoop):
                    exit_code = EXIT_CRASH
            stop_task.cancel()
            await runner.cleanup()  # stop listening, let in-flight requests finish
            roles_task.cancel()
            with contextlib.suppress(BaseException):
                await asyncio.wait({roles_task}, timeout=settings.shutdown_timeout + 2)
            for task in (watchdog, bus_task, gauges):
                if task is not None:
                    task.cancel()
    except* RoleCrashLoop:
        exit_code = EXIT_CRASH
    finally:
        await runner.cleanup()
        await services.tracer.aclose()  # after the roles: their last spans go out too
        await db.close()
        notifier.close()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
    log.info("triggerd stopped (exit %d)", exit_code)
    return exit_code


async def _watchdog(notifier: Notifier) -> None:
    """WATCHDOG=1 at half the systemd deadline for as long as the loop is responsive."""
    assert notifier.watchdog_interval is not None
    while True:
        notifier.watchdog()
        await asyncio.sleep(notifier.watchdog_interval)
