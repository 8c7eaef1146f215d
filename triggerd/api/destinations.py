"""The API's side of the destination rule: an endpoint whose host is an IP literal the
worker would refuse is refused up front, as a 400 on `config.endpoint`. Host names are
not resolved here (what they resolve to can change); the worker judges those when it
connects (worker/destinations.py)."""

from __future__ import annotations

from urllib.parse import urlsplit

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
    try:
        host = urlsplit(endpoint).hostname
    except ValueError:
        return  # validation owns malformed URLs
    reason = policy.host_refusal(host) if host else None
    if reason is not None:
        raise ValidationError(
            FIELD,
            f"destination not allowed: {reason}; deliveries go to public addresses and to"
            " the networks the operator allows (TRIGGERD_DELIVERY_ALLOW_NETWORKS)",
        )
