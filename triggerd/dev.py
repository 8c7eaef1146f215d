"""`triggerd dev`: the embedded default. A private MariaDB and Kafka-protocol broker,
migrated, with every role running against them; Ctrl-C stops it all and removes the
temp dirs. Every TRIGGERD_* setting is honoured except the database and the broker.

Two defaults differ from `triggerd run`, for a stack that lives on one machine: the API
listens on 127.0.0.1 (an open API without keys must not face the network by default),
and deliveries may reach loopback (a receiver on the same machine is the usual dev
target). Either setting given in the environment or the file wins."""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Callable

from triggerd.config import Settings, given_settings, load_settings
from triggerd.devstack import KafkaBroker, MariaDBServer
from triggerd.eventloop import run
from triggerd.logs import setup_logging
from triggerd.systemd import Notifier

log = logging.getLogger(__name__)

_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
DEV_HTTP_HOST = "127.0.0.1"
DEV_ALLOW_NETWORKS = "127.0.0.0/8,::1/128"
DEV_DEFAULTS = {"http_host": DEV_HTTP_HOST, "delivery_allow_networks": DEV_ALLOW_NETWORKS}


class _PrintUrls(Notifier):
    """Prints the `name: URL` lines once every role is up (and still talks to systemd)."""

    def __init__(self, base: str) -> None:
        super().__init__()
        self.base = base

    def ready(self) -> None:
        super().ready()
        print(f"api: {self.base}/api/v1", flush=True)
        print(f"docs: {self.base}/api/docs", flush=True)
        print(f"console: {self.base}/ui", flush=True)
        print(f"health: {self.base}/health", flush=True)


def run_dev(config_file: str | None) -> int:
    environ = {k: v for k, v in os.environ.items()
               if k not in ("TRIGGERD_DATABASE_URL", "TRIGGERD_KAFKA_BOOTSTRAP")}  # fmt: skip
    given = given_settings(environ, config_file)
    dev_defaults = {key: value for key, value in DEV_DEFAULTS.items() if key not in given}
    settings = load_settings(environ, config_file=config_file, overrides=dev_defaults)
    setup_logging(settings.log_level, settings.log_format)
    database = MariaDBServer()
    broker = KafkaBroker()

    def clean_up() -> None:
        """Stop the private servers and remove their temp dirs; runs on the way out and,
        synchronously, on a second Ctrl-C (which skips the drain, not this)."""
        broker.close()
        database.close()

    try:
        database.start()
        broker.start()
        url = database.create_database("triggerd")
        host = "127.0.0.1" if settings.http_host in ("0.0.0.0", "::") else settings.http_host
        base = f"http://{host}:{settings.http_port}"
        overrides: dict[str, object] = {"database_url": url, "kafka_bootstrap": broker.bootstrap,
                                        **dev_defaults}
        if "TRIGGERD_PUBLIC_URL" not in environ:
            overrides["public_url"] = base
        settings = load_settings(environ, config_file=config_file, overrides=overrides)
        # In the log, not on stdout (which carries the three `name: URL` lines): where to
        # point a Kafka consumer or a MySQL client at the embedded stack.
        log.info("embedded stack: database %s, kafka bootstrap %s (topic %s)", url,
                 broker.bootstrap, settings.kafka_topic)  # fmt: skip
        _log_dev_defaults(settings, dev_defaults)
        serving = _migrate_and_serve(settings, _PrintUrls(base), clean_up)
        return run(serving, settings.event_loop)
    except KeyboardInterrupt:
        return 0
    finally:
        # Another Ctrl-C must not interrupt the cleanup half-way (a server or dir left).
        previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in _STOP_SIGNALS}
        try:
            clean_up()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def _log_dev_defaults(settings: Settings, dev_defaults: dict[str, str]) -> None:
    if "http_host" in dev_defaults:
        log.info("dev: listening on %s only (set TRIGGERD_HTTP_HOST to listen elsewhere)",
                 settings.http_host)  # fmt: skip
    if "delivery_allow_networks" in dev_defaults:
        log.info("dev: deliveries may reach loopback (TRIGGERD_DELIVERY_ALLOW_NETWORKS=%s);"
                 " `triggerd run` allows public addresses only unless configured",
                 DEV_ALLOW_NETWORKS)  # fmt: skip


async def _migrate_and_serve(settings: Settings, notifier: Notifier,
                             on_force_exit: Callable[[], None]) -> int:  # fmt: skip
    from triggerd.daemon import serve
    from triggerd.store.db import Database
    from triggerd.store.migrations import migrate

    db = Database(settings.database, pool_size=2)
    await db.connect()
    try:
        await migrate(db)
    finally:
        await db.close()
    return await serve(settings, notifier, on_force_exit)
