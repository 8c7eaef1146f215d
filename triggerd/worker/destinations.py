"""The destination check where it cannot be dodged: on the addresses the worker connects to.

Two hooks on the delivery session's connector (domain/destinations.py says what is
allowed):
- `GuardedResolver` wraps the resolver: the addresses a host name resolves to are
  filtered before aiohttp sees them, so it connects only to allowed ones (and caches only
  those). A name whose every address is refused fails with `DestinationRefused`. There
  is no rebinding window: the addresses checked are the addresses connected to.
- `guarded_socket_factory` checks the address of every socket aiohttp opens. IP-literal
  hosts never reach a resolver, so this is where they are refused; for names it is a
  second look at what the resolver already filtered.

A refusal surfaces from `session.request` as an `aiohttp.ClientConnectorError` whose
`os_error` is a `DestinationRefused`; `refusal_of` digs it out.
"""

from __future__ import annotations

import socket
from typing import Any

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

from triggerd.domain.destinations import DestinationPolicy, parse_ip

PREFIX = "destination not allowed"


class DestinationRefused(OSError):
    """A delivery's host is, or resolves only to, addresses it may not reach."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"{PREFIX}: {reason}")
        self.reason = reason


class GuardedResolver(AbstractResolver):
    def __init__(self, policy: DestinationPolicy, inner: AbstractResolver | None = None) -> None:
        self.policy = policy
        self.inner = inner or DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self.inner.resolve(host, port, family)
        allowed: list[ResolveResult] = []
        refusals: list[str] = []
        for result in results:
            address = parse_ip(result["host"])
            reason = (self.policy.refusal(address) if address is not None
                      else f"{result['host']!r} is not an IP address")  # fmt: skip
            if reason is None:
                allowed.append(result)
            else:
                refusals.append(reason)
        if not allowed:
            detail = "; ".join(dict.fromkeys(refusals)) if refusals else "no address"
            raise DestinationRefused(f"{host} resolves only to refused addresses ({detail})")
        return allowed

    async def close(self) -> None:
        await self.inner.close()


def guarded_socket_factory(policy: DestinationPolicy) -> Any:
    """aiohappyeyeballs' socket factory: the socket for `addr_info`, if it may connect
    there. (Typed Any: the factory type lives in aiohappyeyeballs.)"""

    def factory(addr_info: tuple[Any, ...]) -> socket.socket:
        family, type_, proto, _canonname, sockaddr = addr_info
        address = parse_ip(str(sockaddr[0]))
        reason = (policy.refusal(address) if address is not None
                  else f"{sockaddr[0]!r} is not an IP address")  # fmt: skip
        if reason is not None:
            raise DestinationRefused(reason)
        return socket.socket(family=family, type=type_, proto=proto)

    return factory


def refusal_of(exc: BaseException) -> DestinationRefused | None:
    """The DestinationRefused behind a failed request, if that is what it was."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, DestinationRefused):
            return current
        if isinstance(current, aiohttp.ClientConnectorError):
            inner = current.os_error
            if isinstance(inner, DestinationRefused):
                return inner
        current = current.__cause__ or current.__context__
    return None
