"""The supervisor restarts crashed roles with backoff and gives up on a crash loop."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from triggerd.supervisor import Component, RoleCrashLoop, Supervisor


class Steady:
    name = "steady"

    def __init__(self) -> None:
        self.cancelled = False

    async def run(self, ready: Callable[[], None]) -> None:
        ready()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled = True
            raise


class Flaky:
    """Crashes `crashes` times, then runs."""

    name = "flaky"

    def __init__(self, crashes: int) -> None:
        self.crashes = crashes
        self.starts = 0

    async def run(self, ready: Callable[[], None]) -> None:
        self.starts += 1
        if self.starts <= self.crashes:
            raise RuntimeError("boom")
        ready()
        await asyncio.Event().wait()


async def test_crashed_role_is_restarted_and_all_ready_fires_once() -> None:
    ready_calls: list[int] = []
    flaky, steady = Flaky(crashes=2), Steady()
    sup = Supervisor([steady, flaky], restart_base=0.01, restart_cap=0.02,
                     on_all_ready=lambda: ready_calls.append(1))  # fmt: skip
    task = asyncio.create_task(sup.run())
    async with asyncio.timeout(5):
        while not sup.healthy:
            await asyncio.sleep(0.01)
    assert flaky.starts == 3
    assert sup.states == {"steady": "ok", "flaky": "ok"}
    assert ready_calls == [1]
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert steady.cancelled
    assert sup.states == {"steady": "stopped", "flaky": "stopped"}


async def test_crash_loop_ends_the_supervisor() -> None:
    flaky, steady = Flaky(crashes=100), Steady()
    sup = Supervisor([steady, flaky], max_crashes=5, crash_window=60,
                     restart_base=0.001, restart_cap=0.002)  # fmt: skip
    async with asyncio.timeout(5):
        with pytest.raises(RoleCrashLoop, match="flaky"):
            await sup.run()
    assert flaky.starts == 5
    assert steady.cancelled  # the healthy role was stopped, not left running


async def test_health_reports_a_restarting_role() -> None:
    flaky = Flaky(crashes=1)
    sup = Supervisor([flaky], restart_base=0.5, restart_cap=0.5)
    task = asyncio.create_task(sup.run())
    async with asyncio.timeout(5):
        while sup.states["flaky"] != "restarting":
            await asyncio.sleep(0.005)
    assert not sup.healthy
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_components_run_beside_the_roles_and_are_reported_apart() -> None:
    """The ingestion pipeline and the outbox relay are components: restarted like roles
    when they crash, listed under their own names, not among the roles."""
    runs: list[int] = []

    async def work() -> None:
        runs.append(1)
        if len(runs) == 1:
            raise RuntimeError("first run crashes")
        await asyncio.Event().wait()

    sup = Supervisor([Steady()], components=[Component("relay", work)],
                     restart_base=0.01, restart_cap=0.02)  # fmt: skip
    task = asyncio.create_task(sup.run())
    try:
        async with asyncio.timeout(5):
            while len(runs) < 2 or not sup.healthy:
                await asyncio.sleep(0.01)
        assert sup.role_states() == {"steady": "ok"}
        assert sup.component_states() == {"relay": "ok"}
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
