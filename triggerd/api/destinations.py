"""The API's side of the destination rule: an endpoint whose host is an IP literal the
worker would refuse is refused up front, as a 400 on `config.endpoint`. Host names are
not resolved here (what they resolve to can change); the worker judges those when it
connects (worker/destinations.py)."""

from __future__ import annotations

from contextlib import suppress
from urllib.parse import urlsplit

import yarl

from triggerd.config import Settings
from triggerd.domain.destinations import DestinationPolicy
from triggerd.domain.errors import ValidationError

FIELD = "config.endpoint"


def policy_of(settings: Settings) -> DestinationPolicy:
    return DestinationPolicy(settings.delivery_allow_networks)


def check_endpoint(endpoint: str | None, policy: DestinationPolicy) -> None:
    """Raise the 400 when `endpoint` (a config's) is a refused IP literal."""
    if endpoint is None:
        return
    for host in _hosts(endpoint):
        reason = policy.host_refusal(host)
        if reason is not None:
            raise ValidationError(
                FIELD,
                f"destination not allowed: {reason}; deliveries go to public addresses and"
                " to the networks the operator allows (TRIGGERD_DELIVERY_ALLOW_NETWORKS)",
            )


def _hosts(endpoint: str) -> list[str]:
    """The URL's host as urlsplit reads it and as the worker's HTTP client (yarl) does:
    yarl maps Unicode forms to ASCII (`１２７.0.0.1` is 127.0.0.1), and an address with
    one trailing dot (`169.254.169.254.`, a fully qualified form) is the same address."""
    hosts: list[str] = []
    with suppress(ValueError):  # validation owns malformed URLs
        hosts.append(urlsplit(endpoint).hostname or "")
    with suppress(ValueError, TypeError):
        hosts.append(yarl.URL(endpoint).host or "")
    found: list[str] = []
    for host in hosts:
        host = host[:-1] if host.endswith(".") else host
        if host and host not in found:
            found.append(host)
    return found
