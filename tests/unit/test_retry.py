"""The one retry helper: which faults get another try, how many, and what propagates."""

from __future__ import annotations

import asyncio

import pymysql
import pytest

from triggerd.domain.retry import Retry
from triggerd.store.mysql_errors import is_duplicate_key, is_lock_conflict, is_transient

QUICK = Retry(tries=3, base=0.001, cap=0.002)
DEADLOCK = pymysql.err.OperationalError(1213, "Deadlock found when trying to get lock")


class Flaky:
    def __init__(self, failures: list[BaseException]) -> None:
        self.failures = failures
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)
        return "done"


async def test_a_retryable_fault_is_tried_again_until_it_works() -> None:
    op = Flaky([DEADLOCK, DEADLOCK])
    assert await QUICK.run(op, retry_on=is_lock_conflict, what="t") == "done"
    assert op.calls == 3


async def test_tries_are_bounded_and_the_last_fault_propagates() -> None:
    op = Flaky([DEADLOCK] * 5)
    with pytest.raises(pymysql.err.OperationalError):
        await QUICK.run(op, retry_on=is_lock_conflict, what="t")
    assert op.calls == 3


async def test_other_faults_propagate_at_once() -> None:
    op = Flaky([ValueError("a bug"), DEADLOCK])
    with pytest.raises(ValueError):
        await QUICK.run(op, retry_on=is_transient, what="t")
    assert op.calls == 1


async def test_without_a_bound_it_retries_until_cancelled() -> None:
    op = Flaky([ConnectionError("down")] * 1000)
    task = asyncio.create_task(Retry(tries=None, base=0.001, cap=0.001).run(
        op, retry_on=is_transient, what="t"))
    async with asyncio.timeout(5):
        while op.calls < 20:
            await asyncio.sleep(0.005)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


@pytest.mark.parametrize(("exc", "transient", "lock", "duplicate"), [
    (pymysql.err.OperationalError(2006, "MySQL server has gone away"), True, False, False),
    (pymysql.err.OperationalError(1205, "Lock wait timeout exceeded"), True, True, False),
    (DEADLOCK, True, True, False),
    (pymysql.err.IntegrityError(1062, "Duplicate entry"), False, False, True),
    (pymysql.err.ProgrammingError(1064, "syntax"), False, False, False),
    (ConnectionRefusedError(), True, False, False),
])  # fmt: skip
def test_mysql_error_codes_are_read_in_one_place(
    exc: BaseException, transient: bool, lock: bool, duplicate: bool
) -> None:
    assert (is_transient(exc), is_lock_conflict(exc), is_duplicate_key(exc)) == (
        transient, lock, duplicate)
