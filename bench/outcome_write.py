"""What the worker's outcome write of a batch costs MariaDB, by the shape of its SQL.

    python bench/outcome_write.py [--batches 1000] [--size 6] [--rounds 2]

Starts a private MariaDB (triggerd.devstack, as the other benchmarks do), creates the
schema, and for each shape writes `--batches` batches of `--size` delivery outcomes
(each batch: fresh event rows and claimed attempt rows, then the outcome write),
alternating the shapes `--rounds` times. Prints, per batch, the server's CPU time (the
mariadbd process, less that of a run with the same inserts and no outcome write), the
client's CPU (pymysql, this process: the rendering and the round trips) and the
temporary tables the server created:

- `script`: what the worker sends (store/deliveries.py): BEGIN, an UPDATE of the
  attempt rows, an UPDATE of their events, COMMIT, in one round trip;
- `round trips`: the same four statements, one round trip each;
- `multi-table`: the one statement the worker sent before, joining the attempt rows to
  a derived table of the outcomes and to their events (MariaDB keeps the rows of a
  multi-table UPDATE in temporary tables, on disk when TEXT columns are written).
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pymysql

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from machine import describe  # noqa: E402  (bench/machine.py, beside this script)
from private_db import migrated  # noqa: E402

from triggerd.devstack import MariaDBServer  # noqa: E402
from triggerd.domain.models import new_id  # noqa: E402
from triggerd.domain.timeutil import to_db, utcnow  # noqa: E402
from triggerd.store.deliveries import Outcome, _outcome_script  # noqa: E402
from triggerd.store.literals import text, time_literal, uuid_text  # noqa: E402

# The statement the worker sent before the script (kept here for the comparison).
_MULTI_TABLE = (
    "UPDATE delivery_attempts d JOIN ({values}) v"
    " ON d.event_id = v.event_id AND d.attempt = v.attempt"
    " LEFT JOIN event_logs e ON e.id = v.event_id AND e.publish_attempt <= v.attempt"
    " SET d.finished_at = v.finished_at, d.response_status = v.response_status,"
    " d.latency_ms = v.latency_ms, d.error = v.error, d.claim = {token},"
    " e.attempts = GREATEST(e.attempts, v.attempt), e.response_status = v.response_status,"
    " e.error_message = IF(v.status = 'success', NULL, v.error),"
    " e.delivered_at = IF(v.status = 'success', v.finished_at, e.delivered_at),"
    " e.execution_status = v.status, e.published_at = IFNULL(e.published_at, d.started_at),"
    " e.publish_at = v.retry_at,"
    " e.publish_attempt = IF(v.status = 'retrying', v.attempt + 1, e.publish_attempt)"
    " WHERE d.finished_at IS NULL"
)


def multi_table(outcomes: list[Outcome], token: int) -> list[str]:
    selects = []
    for o in outcomes:
        values = [f"_ascii{uuid_text(o.event_id)} AS event_id", f"{o.attempt} AS attempt",
                  f"{text(o.status)} AS status", f"{time_literal(o.finished_at)} AS finished_at",
                  f"{o.response_status} AS response_status", f"{o.latency_ms} AS latency_ms",
                  f"{text(o.error)} AS error", "NULL AS retry_at"]  # fmt: skip
        selects.append("SELECT " + ", ".join(values))
    return [_MULTI_TABLE.format(values=" UNION ALL ".join(selects), token=token)]


def script(outcomes: list[Outcome], token: int) -> list[str]:
    return [_outcome_script(outcomes, token)]


def round_trips(outcomes: list[Outcome], token: int) -> list[str]:
    return _outcome_script(outcomes, token).split(";\n")


def nothing(outcomes: list[Outcome], token: int) -> list[str]:
    return []


SHAPES: dict[str, Callable[[list[Outcome], int], list[str]]] = {
    "script": script, "round trips": round_trips, "multi-table": multi_table,
}


def server_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run(conn: pymysql.Connection, pid: int, shape: Callable[[list[Outcome], int], list[str]],
        batches: int, size: int) -> tuple[float, float, dict[str, int]]:  # type: ignore[type-arg]  # fmt: skip
    """(server CPU, client CPU of the outcome writes, temporary tables) per batch."""
    cur = conn.cursor()
    cur.execute("SHOW SESSION STATUS LIKE 'Created_tmp%tables'")
    before = {name: int(value) for name, value in cur.fetchall()}
    server, client = server_cpu(pid), 0.0
    for _ in range(batches):
        ids = [new_id() for _ in range(size)]
        now = to_db(utcnow())
        cur.executemany(
            "INSERT INTO event_logs (id, trigger_id, trigger_name, trigger_type, source,"
            " payload, fired_at, publish_at, created_at)"
            " VALUES (%s, NULL, 'bench', 'webhook', 'webhook', '{}', %s, %s, %s)",
            [(i, now, now, now) for i in ids],
        )
        cur.executemany("INSERT INTO delivery_attempts (event_id, attempt, started_at)"
                        " VALUES (%s, 1, %s)", [(i, now) for i in ids])  # fmt: skip
        finished = utcnow()
        outcomes = [Outcome(i, 1, "success", finished, 200, 1 + n % 7, None)
                    for n, i in enumerate(sorted(ids))]  # fmt: skip
        started = time.process_time()
        for statement in shape(outcomes, secrets.randbits(63)):
            cur.execute(statement)
            while cur.nextset():
                pass
        client += time.process_time() - started
    server = server_cpu(pid) - server
    cur.execute("SHOW SESSION STATUS LIKE 'Created_tmp%tables'")
    tables = {name: int(value) - before[name] for name, value in cur.fetchall()}
    return server / batches, client / batches, tables


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=1000)
    parser.add_argument("--size", type=int, default=6, help="outcomes a batch")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    print(describe())
    mariadb = MariaDBServer()
    mariadb.start()
    try:
        conn = migrated(mariadb, "outcomes")
        assert mariadb.proc is not None
        print(f"{args.batches} batches of {args.size} outcomes, per batch:")
        for round_ in range(1, args.rounds + 1):
            base, _, _ = run(conn, mariadb.proc.pid, nothing, args.batches, args.size)
            for name, shape in SHAPES.items():
                server, client, tables = run(conn, mariadb.proc.pid, shape, args.batches,
                                             args.size)  # fmt: skip
                print(f"  round {round_} {name:>11}: server CPU {(server - base) * 1e6:6.0f} µs,"
                      f" client CPU {client * 1e6:5.0f} µs, temporary tables"
                      f" {tables['Created_tmp_tables'] / args.batches:.0f}"
                      f" ({tables['Created_tmp_disk_tables'] / args.batches:.0f} on disk)")
        conn.close()
    finally:
        mariadb.close()


if __name__ == "__main__":
    main()
