"""The `triggerd` console script: run, migrate, dev, version."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from typing import Any

from triggerd import __version__
from triggerd.config import Settings, load_settings
from triggerd.domain.errors import ConfigError, SchemaVersionError, TriggerdError
from triggerd.logs import setup_logging

log = logging.getLogger("triggerd")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="triggerd", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the daemon")
    run.add_argument("--roles", help="comma-separated subset of api,scheduler,worker,retention")
    run.add_argument("--config", help="TOML settings file (the environment wins)")
    migrate = sub.add_parser("migrate", help="apply the SQL migrations")
    migrate.add_argument("--config", help="TOML settings file")
    dev = sub.add_parser("dev", help="run everything on a private MariaDB and Kafka broker")
    dev.add_argument("--config", help="TOML settings file")
    sub.add_parser("version", help="print the version")
    return parser


def _load(config: str | None, overrides: dict[str, Any] | None = None,
          environ: dict[str, str] | None = None) -> Settings:  # fmt: skip
    settings = load_settings(environ, config_file=config, overrides=overrides)
    setup_logging(settings.log_level, settings.log_format)
    return settings


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "version":
            print(f"triggerd {__version__}")
            return 0
        if args.command == "run":
            settings = _load(args.config, {"roles": args.roles})
            settings.database  # noqa: B018 - fails early with a clear message when unset
            from triggerd.daemon import serve
            from triggerd.eventloop import run

            return run(serve(settings), settings.event_loop)
        if args.command == "migrate":
            settings = _load(args.config)
            return asyncio.run(_migrate(settings))
        if args.command == "dev":
            from triggerd.dev import run_dev

            return run_dev(args.config)
    except (ConfigError, SchemaVersionError) as exc:
        print(f"triggerd: {exc}", file=sys.stderr)
        return 2
    except TriggerdError as exc:
        print(f"triggerd: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    return 2


async def _migrate(settings: Settings) -> int:
    from triggerd.store.db import Database, is_transient, url_error
    from triggerd.store.migrations import migrate

    db = Database(settings.database, pool_size=2)
    try:
        await db.connect()
        applied = await migrate(db)
    except Exception as exc:
        fatal = url_error(db.url, exc)
        if fatal is not None:
            raise fatal from None
        if not is_transient(exc):
            raise
        raise TriggerdError(f"cannot reach the database: {exc}") from None
    finally:
        await db.close()
    names = ", ".join(f"{m.version:03d}_{m.name}" for m in applied) or "nothing to do"
    print(f"migrate: {names}")
    return 0

