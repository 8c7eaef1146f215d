"""What the outbox costs MariaDB per webhook, by where its mark is kept.

    python bench/outbox_shape.py [--batches 400] [--size 50] [--clear 250] [--rounds 3]

Starts a private MariaDB (triggerd.devstack), creates the schema, and for each shape
writes `--batches` group commits of `--size` webhook events (rows rendered by
store/event_rows.py, as ingestion writes them), then clears their outbox marks `--clear`
at a time, as the fast path does once the jobs are on Kafka. Prints the server's CPU
time per event (the mariadbd process, its background purge included) for the write
and for the clear:

- `event row`: what triggerd does (store/event_rows.py, ingest/pipeline.py). The row
  carries `publish_at` (indexed in ix_events_owed); the clear sets it NULL and records
  `published_at`: an UPDATE of the wide row that moves its index entry.
- `settled row`: the same clear once the worker has recorded the delivery first, as it
  usually has when the clear runs a second after the publish: it only reads the rows.
- `narrow table`: the mark in a table of its own (event id, due time, attempt),
  INSERTed in the event's transaction and DELETEd by the clear; the event row is
  written without a mark.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from datetime import timedelta
from pathlib import Path

import pymysql

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from machine import describe  # noqa: E402  (bench/machine.py, beside this script)
from private_db import migrated  # noqa: E402

from triggerd.devstack import MariaDBServer  # noqa: E402
from triggerd.domain.models import new_id  # noqa: E402
from triggerd.domain.timeutil import utcnow  # noqa: E402
from triggerd.store.event_rows import EventRecord, insert_statements  # noqa: E402
from triggerd.store.literals import time_literal, uuid_literals  # noqa: E402

BODY = {"order_id": "o-1", "amount": 12.5, "currency": "EUR",
        "items": [{"sku": "a-1", "qty": 2}, {"sku": "b-7", "qty": 1}]}  # fmt: skip
DELIVERY = {"endpoint": "https://example.com/hooks/orders", "http_method": "POST",
            "headers": {}, "timeout_seconds": 10,
            "retry": {"max_attempts": 5, "backoff_seconds": 1}}  # fmt: skip
GRACE = timedelta(seconds=5)
NARROW = ("CREATE TABLE bench_outbox (event_id CHAR(36) CHARACTER SET ascii NOT NULL,"
          " publish_at DATETIME(3) NOT NULL, attempt INT NOT NULL, PRIMARY KEY (event_id),"
          " KEY ix_bench_outbox_due (publish_at)) ENGINE=InnoDB")  # fmt: skip
SETTLE = 1.5  # seconds left to the purge after each phase, counted in its CPU


def server_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def records(trigger_id: str, size: int, marked: bool) -> list[EventRecord]:
    now = utcnow()
    return [EventRecord(id=new_id(), trigger_id=trigger_id, trigger_name="bench",
                        trigger_type="webhook", source="webhook", is_test_run=False,
                        payload=BODY, delivery=DELIVERY, fired_at=now,
                        publish_at=now + GRACE if marked else None)
            for _ in range(size)]  # fmt: skip


def write(cur: pymysql.cursors.Cursor, trigger_id: str, size: int, narrow: bool) -> list[str]:
    batch = records(trigger_id, size, marked=not narrow)
    (insert,) = insert_statements(batch)
    if not narrow:
        cur.execute(insert)  # autocommit: one statement, as the writer sends it
        return [r.id for r in batch]
    marks = ",".join(f"('{r.id}',{time_literal(r.fired_at + GRACE)},1)" for r in batch)
    cur.execute(f"BEGIN;{insert};INSERT INTO bench_outbox (event_id, publish_at, attempt)"
                f" VALUES {marks};COMMIT")  # fmt: skip
    while cur.nextset():
        pass
    return [r.id for r in batch]


def clear(cur: pymysql.cursors.Cursor, ids: list[str], narrow: bool) -> None:
    if narrow:
        cur.execute(f"DELETE FROM bench_outbox WHERE event_id IN ({uuid_literals(ids)})"
                    " AND attempt = 1")  # fmt: skip
    else:  # the statement of ingest/pipeline.py clear_statement()
        cur.execute(f"UPDATE event_logs SET publish_at = NULL,"
                    f" published_at = {time_literal(utcnow())} WHERE id IN"
                    f" ({uuid_literals(ids)}) AND publish_attempt = 1"
                    f" AND published_at IS NULL")  # fmt: skip


class Meter:
    """Server CPU seconds between start() and stop(), the purge that follows included,
    less the server's idle rate."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        before = server_cpu(pid)
        time.sleep(2)
        self.idle = (server_cpu(pid) - before) / 2
        self.started = self.wall = 0.0

    def start(self) -> None:
        self.started, self.wall = server_cpu(self.pid), time.monotonic()

    def stop(self) -> float:
        time.sleep(SETTLE)
        return server_cpu(self.pid) - self.started - self.idle * (time.monotonic() - self.wall)


def shape(cur: pymysql.cursors.Cursor, meter: Meter, args: argparse.Namespace,
          narrow: bool) -> str:  # fmt: skip
    """One round of one shape: its figures per event."""
    trigger_id, events = new_id(), args.batches * args.size
    meter.start()
    ids = [i for _ in range(args.batches) for i in write(cur, trigger_id, args.size, narrow)]
    written = meter.stop() / events * 1e6
    chunks = [ids[i:i + args.clear] for i in range(0, len(ids), args.clear)]
    meter.start()
    for chunk in chunks:
        clear(cur, chunk, narrow)
    cleared = meter.stop() / events * 1e6
    line = f"write {written:5.1f} µs, clear {cleared:5.1f} µs, both {written + cleared:5.1f} µs"
    if not narrow:
        meter.start()
        for chunk in chunks:  # again: each row has its published_at now
            clear(cur, chunk, narrow)
        line += f"; settled row: clear {meter.stop() / events * 1e6:5.1f} µs"
    return line


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=400)
    parser.add_argument("--size", type=int, default=50, help="events a group commit")
    parser.add_argument("--clear", type=int, default=250, help="marks a clear")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print(describe())
    mariadb = MariaDBServer()
    mariadb.start()
    try:
        conn = migrated(mariadb, "outbox")
        assert mariadb.proc is not None
        cur = conn.cursor()
        cur.execute(NARROW)
        meter = Meter(mariadb.proc.pid)
        print(f"{args.batches} group commits of {args.size} events, cleared {args.clear}"
              f" at a time; MariaDB CPU per event:")  # fmt: skip
        for round_ in range(1, args.rounds + 1):
            for name, narrow in (("event row", False), ("narrow table", True)):
                print(f"  round {round_} {name:>12}: {shape(cur, meter, args, narrow)}",
                      flush=True)  # fmt: skip
        conn.close()
    finally:
        mariadb.close()


if __name__ == "__main__":
    main()
