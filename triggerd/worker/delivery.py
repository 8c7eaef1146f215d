"""One HTTP delivery attempt and the policy around it.

Pure parts (classification, Retry-After, the retry delay, the request headers) are
plain functions, unit-tested without a network; `send` is the one function that
talks HTTP, on the role's shared ClientSession.

Policy:
- 2xx is success. 408, 429, 5xx, timeouts and connection errors are retryable; any
  other status (other 4xx, and 3xx: redirects are not followed) fails at once.
- The delay before the next attempt is `backoff_delay(n, backoff_seconds,
  max_backoff_seconds)` (exponential, full jitter above a floor, capped), or the
  target's `Retry-After` when that is longer; `Retry-After` itself is capped at
  `max_backoff_seconds`.
- An attempt series (the first delivery, or one replay) has `retry.max_attempts`
  attempts; attempt numbers continue across series (`attempt - attempt_base`).
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from multidict import CIMultiDict

from triggerd import __version__
from triggerd.domain.backoff import backoff_delay
from triggerd.domain.enums import Verdict
from triggerd.worker.destinations import refusal_of
from triggerd.worker.lane import SNIPPET_BYTES, Answer, DeliveryLane
from triggerd.worker.signing import signature_headers

SUCCESS, RETRY, FAIL = Verdict.SUCCESS, Verdict.RETRY, Verdict.FAIL

DEFAULT_TIMEOUT = 10.0
DEFAULT_METHOD = "POST"
MAX_ERROR_CHARS = 500
# A stored error shows the status line and at most this much of the answer, printable
# and on one line: enough to tell a user what went wrong, too little to turn deliveries
# into a way of reading what a target serves.
EXCERPT_CHARS = 120
USER_AGENT = f"triggerd/{__version__}"


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 5
    backoff_seconds: float = 1.0
    max_backoff_seconds: float = 300.0

    @classmethod
    def from_config(cls, retry: Any) -> RetryPolicy:
        if not isinstance(retry, dict):
            return cls()
        default = cls()
        base = float(retry.get("backoff_seconds") or default.backoff_seconds)
        cap = float(retry.get("max_backoff_seconds") or max(default.max_backoff_seconds, base))
        return cls(
            max_attempts=max(1, int(retry.get("max_attempts") or default.max_attempts)),
            backoff_seconds=base,
            max_backoff_seconds=max(cap, base),
        )


@dataclass(frozen=True)
class Target:
    """Where and how to deliver: read from the event's delivery snapshot."""

    endpoint: str | None
    method: str = DEFAULT_METHOD
    headers: tuple[tuple[str, str], ...] = ()
    timeout: float = DEFAULT_TIMEOUT
    retry: RetryPolicy = RetryPolicy()
    signing_secret: str | None = None
    rate_limit: float | None = None  # deliveries per second, for the trigger

    @classmethod
    def from_snapshot(cls, delivery: Any) -> Target:
        if not isinstance(delivery, dict):
            delivery = {}
        headers = delivery.get("headers") or {}
        rate = delivery.get("rate_limit_per_second")
        return cls(
            endpoint=delivery.get("endpoint") or None,
            method=str(delivery.get("http_method") or DEFAULT_METHOD).upper(),
            headers=tuple((str(k), str(v)) for k, v in dict(headers).items()),
            timeout=float(delivery.get("timeout_seconds") or DEFAULT_TIMEOUT),
            retry=RetryPolicy.from_config(delivery.get("retry")),
            signing_secret=delivery.get("signing_secret") or None,
            rate_limit=float(rate) if isinstance(rate, int | float) and rate > 0 else None,
        )


@dataclass(frozen=True)
class AttemptResult:
    status: int | None  # the HTTP status, None when no response came back
    latency: float  # seconds
    error: str | None = None
    retry_after: float | None = None  # seconds the target asked us to wait
    permanent: bool = False  # a request that can never succeed (e.g. an invalid URL)

    @property
    def verdict(self) -> Verdict:
        return FAIL if self.permanent else classify(self.status)

    @property
    def latency_ms(self) -> int:
        return round(self.latency * 1000)


def classify(status: int | None) -> Verdict:
    """success / retry / fail for a response status (None: timeout or connection error)."""
    if status is None:
        return RETRY
    if 200 <= status < 300:
        return SUCCESS
    if status in (408, 429) or 500 <= status < 600:  # 5xx; a status beyond 599 is no class
        return RETRY
    return FAIL


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds from a `Retry-After` header: delta-seconds or an HTTP date. None if absent
    or unreadable; never negative."""
    if not value:
        return None
    text = value.strip()
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def retry_delay(
    policy: RetryPolicy, series_attempt: int, retry_after: float | None = None,
    rand: random.Random | None = None,
) -> float:  # fmt: skip
    """Seconds before the attempt after `series_attempt` (1 = the first of the series)."""
    delay = backoff_delay(series_attempt, policy.backoff_seconds, policy.max_backoff_seconds, rand)
    if retry_after is not None:
        delay = max(delay, min(retry_after, policy.max_backoff_seconds))
    return delay


def build_headers(
    target: Target, event_id: str, trigger_id: str | None, body: bytes,
    timestamp: int | None = None, traceparent: str | None = None,
) -> CIMultiDict[str]:  # fmt: skip
    """The trigger's headers, then the contract's (which win over the trigger's).
    `traceparent`: the attempt's W3C trace context (its event's trace, its own span)."""
    headers: CIMultiDict[str] = CIMultiDict()
    headers["User-Agent"] = USER_AGENT
    for name, value in target.headers:
        headers[name] = value
    headers["Content-Type"] = "application/json"
    headers["Idempotency-Key"] = event_id
    headers["X-Event-Id"] = event_id
    if trigger_id:
        headers["X-Trigger-Id"] = trigger_id
    elif "X-Trigger-Id" in headers:
        del headers["X-Trigger-Id"]
    if traceparent is not None:
        headers["traceparent"] = traceparent
    if target.signing_secret:
        headers.update(signature_headers(target.signing_secret, event_id, body, timestamp))
    return headers


def url_for_traces(endpoint: str) -> str:
    """The endpoint as a span may show it: without credentials, query or fragment (a
    token in either must not leave for the trace collector)."""
    parts = urlsplit(endpoint)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        port = ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


def excerpt(body: bytes | str, limit: int = EXCERPT_CHARS) -> str:
    """The start of a response body (or a reason phrase) as one short printable line."""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    text = "".join(ch if ch.isprintable() else " " for ch in text[: limit * 4])
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _clip(text: str) -> str:
    return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 1] + "…"


async def send(
    session: aiohttp.ClientSession, target: Target, headers: CIMultiDict[str], body: bytes,
    lane: DeliveryLane | None = None,
) -> AttemptResult:  # fmt: skip
    """One attempt, by the fast lane when it takes it (worker/lane.py), else through
    aiohttp. Never raises for what the target or the network does (those are results);
    cancellation propagates."""
    assert target.endpoint is not None
    started = time.monotonic()
    try:
        if lane is not None:
            async with asyncio.timeout(target.timeout):
                answer = await lane.exchange(target.method, target.endpoint, headers.items(), body)
            if answer is not None:
                return _answered(answer, started)
        # what the lane spent (a failed connect, a lookup) counts against the timeout
        left = max(0.001, target.timeout - (time.monotonic() - started))
        async with session.request(
            target.method, target.endpoint, data=body, headers=headers,
            timeout=aiohttp.ClientTimeout(total=left), allow_redirects=False,
        ) as resp:  # fmt: skip
            snippet = b""
            if not 200 <= resp.status < 300:
                snippet = await resp.content.read(SNIPPET_BYTES)
            retry_after = resp.headers.get("Retry-After")
            return _answered(Answer(resp.status, resp.reason or "", snippet, retry_after), started)
    except TimeoutError:
        return AttemptResult(None, time.monotonic() - started, f"timeout after {target.timeout:g}s")
    except (aiohttp.InvalidURL, ValueError) as exc:
        # aiohttp rejects malformed URLs and header values before connecting: no retry helps.
        return _error_result(exc, started, permanent=True)
    except (aiohttp.ClientError, OSError) as exc:
        refused = refusal_of(exc)
        if refused is not None:
            # Not the target's fault nor a passing one: no retry can succeed.
            return AttemptResult(None, time.monotonic() - started, _clip(str(refused)),
                                 permanent=True)  # fmt: skip
        return _error_result(exc, started)


def _answered(answer: Answer, started: float) -> AttemptResult:
    latency = time.monotonic() - started
    error = None
    if not 200 <= answer.status < 300:
        phrase = excerpt(answer.reason, 60)
        reason = f"HTTP {answer.status}" + (f" {phrase}" if phrase else "")
        text = excerpt(answer.snippet)
        error = _clip(f"{reason}: {text}" if text else reason)
    return AttemptResult(
        status=answer.status,
        latency=latency,
        error=error,
        retry_after=parse_retry_after(answer.retry_after),
    )


def _error_result(exc: BaseException, started: float, *, permanent: bool = False) -> AttemptResult:
    message = str(exc) or type(exc).__name__
    return AttemptResult(
        status=None,
        latency=time.monotonic() - started,
        error=_clip(f"{type(exc).__name__}: {message}"),
        permanent=permanent,
    )
