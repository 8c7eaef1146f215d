"""The supervisor: every role, and every component the roles depend on, is a named task
on one event loop.

A role is an object with a `name` and `async def run(ready)`; it runs until cancelled,
calls `ready()` once it is serving, rides out transient faults itself, and on
cancellation stops intake, drains in-flight work and re-raises. If a role raises
anything else, the supervisor logs the traceback once and restarts it with backoff;
`max_crashes` crashes within `crash_window` seconds end the daemon with an error so
systemd or Docker restarts it. It never sits "running" with a dead role.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

from triggerd.domain.backoff import backoff_delay
from triggerd.domain.errors import TriggerdError

log = logging.getLogger(__name__)


class Role(Protocol):
    name: str

    async def run(self, ready: Callable[[], None]) -> None: ...


class Component:
    """Background work a role depends on, run by the supervisor beside the roles with
    the same restart policy and its own /health entry (`checks.components`): the
    ingestion pipeline, the outbox relay. It is up as soon as it runs."""

    def __init__(self, name: str, work: Callable[[], Awaitable[None]]) -> None:
        self.name = name
        self._work = work

    async def run(self, ready: Callable[[], None]) -> None:
        ready()
        await self._work()


class RoleCrashLoop(TriggerdError):
    """A role crashed too often; the process should exit non-zero."""


class RoleState:
    STARTING = "starting"
    OK = "ok"
    RESTARTING = "restarting"
    STOPPED = "stopped"


class Supervisor:
    def __init__(
        self,
        roles: Sequence[Role],
        *,
        components: Sequence[Role] = (),
        max_crashes: int = 5,
        crash_window: float = 60.0,
        restart_base: float = 0.5,
        restart_cap: float = 10.0,
        on_all_ready: Callable[[], None] | None = None,
    ) -> None:
        self.role_names = [role.name for role in roles]
        self.roles = [*roles, *components]
        self.max_crashes = max_crashes
        self.crash_window = crash_window
        self.restart_base = restart_base
        self.restart_cap = restart_cap
        self.on_all_ready = on_all_ready
        self.states: dict[str, str] = {role.name: RoleState.STARTING for role in self.roles}
        self._crashes: dict[str, deque[float]] = {role.name: deque() for role in self.roles}
        self._all_ready_sent = False

    def role_states(self) -> dict[str, str]:
        return {name: self.states[name] for name in self.role_names}

    def component_states(self) -> dict[str, str]:
        return {name: state for name, state in self.states.items() if name not in self.role_names}

    @property
    def healthy(self) -> bool:
        return all(state == RoleState.OK for state in self.states.values())

    async def run(self) -> None:
        """Run every role until cancelled (graceful stop) or one crash-loops (raises)."""
        try:
            async with asyncio.TaskGroup() as group:
                for role in self.roles:
                    group.create_task(self._keep_running(role), name=f"role:{role.name}")
                if not self.roles:
                    self._mark_ready_if_all()
        except* RoleCrashLoop as crash_group:
            raise crash_group.exceptions[0] from None

    async def _keep_running(self, role: Role) -> None:
        while True:
            self.states[role.name] = RoleState.STARTING

            def ready(role_name: str = role.name) -> None:
                self.states[role_name] = RoleState.OK
                self._mark_ready_if_all()

            try:
                await role.run(ready)
                # A role's run() only returns when it has nothing left to do.
                log.warning("role %s returned; restarting it", role.name)
            except asyncio.CancelledError:
                self.states[role.name] = RoleState.STOPPED
                raise
            except Exception:
                log.exception("role %s crashed", role.name)
            self.states[role.name] = RoleState.RESTARTING
            crashes = self._crashes[role.name]
            now = time.monotonic()
            crashes.append(now)
            while crashes and now - crashes[0] > self.crash_window:
                crashes.popleft()
            if len(crashes) >= self.max_crashes:
                log.critical(
                    "role %s crashed %d times within %.0fs; exiting",
                    role.name,
                    len(crashes),
                    self.crash_window,
                )
                raise RoleCrashLoop(f"role {role.name} crashed {len(crashes)} times")
            delay = backoff_delay(len(crashes), self.restart_base, self.restart_cap)
            log.info("restarting role %s in %.1fs", role.name, delay)
            await asyncio.sleep(delay)

    def _mark_ready_if_all(self) -> None:
        if not self._all_ready_sent and self.healthy:
            self._all_ready_sent = True
            if self.on_all_ready is not None:
                with contextlib.suppress(Exception):
                    self.on_all_ready()
