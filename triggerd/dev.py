"""`triggerd dev`: the embedded default. A private MariaDB and Kafka-protocol broker,
migrated, with every role running against them; Ctrl-C stops it all and removes the
temp dirs. Every TRIGGERD_* setting is honoured except the database and the broker."""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Callable

from triggerd.config import load_settings
from triggerd.devstack import KafkaBroker, MariaDBServer
from triggerd.eventloop import run
from triggerd.logs import setup_logging
from triggerd.systemd import Notifier

log = logging.getLogger(__name__)

_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


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
    settings = load_settings(environ, config_file=config_file)
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
        overrides: dict[str, object] = {"database_url": url, "kafka_bootstrap": broker.bootstrap}
        if "TRIGGERD_PUBLIC_URL" not in environ:
            overrides["public_url"] = base
        settings = load_settings(environ, config_file=config_file, overrides=overrides)
        # In the log, not on stdout (which carries the three `name: URL` lines): where to
        # point a Kafka consumer or a MySQL client at the embedded stack.
        log.info("embedded stack: database %s, kafka bootstrap %s (topic %s)", url,
                 broker.bootstrap, settings.kafka_topic)  # fmt: skip
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


async def _migrate_and_serve(settings: object, notifier: Notifier,
                             on_force_exit: Callable[[], None]) -> int:  # fmt: skip
    from triggerd.config import Settings
    from triggerd.daemon import serve
    from triggerd.store.db import Database
    from triggerd.store.migrations import migrate

    assert isinstance(settings, Settings)
    db = Database(settings.database, pool_size=2)
    await db.connect()
    try:
        await migrate(db)
    finally:
        await db.close()
    return await serve(settings, notifier, on_force_exit)
