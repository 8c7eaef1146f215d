"""API keys at the door: which configured key a request carries, whether its scope
allows the call, and who the caller is for the audit log.

The middleware calls `KeyCheck.check` on every `/api/v1` request but webhook
ingestion; handlers that change something read the caller with `origin_of`.
"""

from __future__ import annotations

import hmac
from collections.abc import Sequence

from aiohttp import web

from triggerd.domain.access import ANONYMOUS, ApiKey
from triggerd.domain.audit import Origin
from triggerd.domain.errors import ApiError
from triggerd.logs import request_id_var
from triggerd.metrics import Metrics

ACTOR = web.RequestKey("actor", str)
SCOPE = web.RequestKey("scope", str)  # the key's scope; not set while the API is open


class KeyRequired(ApiError):
    """401 from the API-key check (answered with a `WWW-Authenticate` challenge)."""

    status = 401
    code = "unauthorized"


class Forbidden(ApiError):
    """403: a valid key whose scope does not allow the call."""

    status = 403
    code = "forbidden"


def requires_key(path: str) -> bool:
    """Whether API keys, when configured, guard `path`: all of `/api/v1` but webhook
    ingestion. The OpenAPI document's `security` follows it too."""
    return path.startswith("/api/v1") and not path.startswith("/api/v1/webhook/")


class KeyCheck:
    def __init__(self, keys: Sequence[ApiKey], metrics: Metrics) -> None:
        self.keys = tuple(keys)
        self._secrets = [key.secret.encode() for key in self.keys]
        self._unauthorized = metrics.api_unauthorized
        self._forbidden = metrics.api_forbidden

    def _match(self, candidate: str) -> ApiKey | None:
        given = candidate.encode("utf-8", "surrogateescape")
        # Compared with every key, matched or not, so the time taken does not reveal
        # which one matched (nor how far a guess got: compare_digest is constant time).
        hits = [hmac.compare_digest(given, secret) for secret in self._secrets]
        return self.keys[hits.index(True)] if True in hits else None

    def check(self, request: web.Request) -> None:
        """Raises KeyRequired (no valid key) or Forbidden (the key's scope does not
        allow the method); else notes the key's name as the request's actor."""
        auth = request.headers.get("Authorization", "")
        candidates = [auth[7:].strip() if auth[:7].lower() == "bearer " else "",
                      request.headers.get("X-API-Key", "")]  # fmt: skip
        # Either header may carry the key; the request passes when one of them is valid.
        found = [key for key in map(self._match, filter(None, candidates)) if key is not None]
        if not found:
            self._unauthorized.inc()
            raise KeyRequired(
                "missing or invalid API key (Authorization: Bearer <key> or X-API-Key)"
            )
        key = max(found, key=lambda k: k.may(request.method))  # two keys: the one allowed
        if not key.may(request.method):
            self._forbidden.inc()
            raise Forbidden(f"the key {key.name!r} has {key.scope} scope: it may only read"
                            " (GET); ask for a write key to change anything",
                            details={"key": key.name, "scope": key.scope})  # fmt: skip
        request[ACTOR] = key.name
        request[SCOPE] = key.scope


def origin_of(request: web.Request) -> Origin:
    """Who made the request (the key's name; `anonymous` with no keys configured) and
    its request id, as the audit log records them."""
    return Origin(actor=request.get(ACTOR, ANONYMOUS), request_id=request_id_var.get())


__all__ = ["ACTOR", "SCOPE", "Forbidden", "KeyCheck", "KeyRequired", "origin_of", "requires_key"]
