"""The delivery policy, without a network: what is retried, when, with which headers,
and which jobs count as already done."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from triggerd.store.deliveries import EventState
from triggerd.worker.consumer import GAP_PATIENCE, PartitionProgress
from triggerd.worker.delivery import (
    FAIL,
    RETRY,
    SUCCESS,
    AttemptResult,
    RetryPolicy,
    Target,
    build_headers,
    classify,
    excerpt,
    parse_retry_after,
    retry_delay,
)
from triggerd.worker.processor import JobProcessor

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("status", "verdict"),
    [(200, SUCCESS), (201, SUCCESS), (204, SUCCESS), (299, SUCCESS),
     (408, RETRY), (429, RETRY), (500, RETRY), (502, RETRY), (503, RETRY), (599, RETRY),
     (None, RETRY),  # timeout or connection error
     (400, FAIL), (401, FAIL), (403, FAIL), (404, FAIL), (409, FAIL), (410, FAIL),
     (422, FAIL), (301, FAIL), (302, FAIL), (304, FAIL), (100, FAIL), (600, FAIL), (999, FAIL)],
)  # fmt: skip
def test_classify(status: int | None, verdict: str) -> None:
    assert classify(status) == verdict


def test_an_unusable_request_is_not_retried() -> None:
    assert AttemptResult(None, 0.0, "InvalidURL", permanent=True).verdict == FAIL
    assert AttemptResult(None, 0.0, "timeout").verdict == RETRY


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("120", 120.0), (" 3 ", 3.0), ("0", 0.0), ("1.5", 1.5), ("-5", 0.0),
     (format_datetime(NOW + timedelta(seconds=90), usegmt=True), 90.0),
     (format_datetime(NOW - timedelta(seconds=90), usegmt=True), 0.0),
     ("Wed, 01 May 2024 12:00:30 GMT", 30.0),
     (None, None), ("", None), ("soon", None), ("Wed, 99 Foo", None)],
)  # fmt: skip
def test_parse_retry_after(value: str | None, seconds: float | None) -> None:
    assert parse_retry_after(value, NOW) == seconds


def test_retry_delay_is_exponential_with_jitter_and_capped() -> None:
    policy = RetryPolicy(max_attempts=10, backoff_seconds=1.0, max_backoff_seconds=10.0)
    rand = random.Random(7)
    for attempt, ceiling in [(1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (5, 10.0), (9, 10.0)]:
        delays = [retry_delay(policy, attempt, rand=rand) for _ in range(200)]
        assert min(delays) >= 0.5  # never immediate
        assert max(delays) <= ceiling
        assert len({round(d, 3) for d in delays}) > 50  # jittered
    assert max(retry_delay(policy, 4, rand=rand) for _ in range(200)) > 4.0  # grows


def test_retry_after_wins_when_longer_and_is_capped() -> None:
    policy = RetryPolicy(max_attempts=5, backoff_seconds=0.1, max_backoff_seconds=30.0)
    assert retry_delay(policy, 1, retry_after=7.0) == 7.0
    assert retry_delay(policy, 1, retry_after=3600.0) == 30.0
    assert retry_delay(policy, 1, retry_after=0.0) <= 0.1  # shorter: the backoff stands


def test_retry_policy_defaults_and_config() -> None:
    assert RetryPolicy.from_config(None) == RetryPolicy(5, 1.0, 300.0)
    assert RetryPolicy.from_config({"max_attempts": 2}) == RetryPolicy(2, 1.0, 300.0)
    configured = {"max_attempts": 3, "backoff_seconds": 2, "max_backoff_seconds": 60}
    assert RetryPolicy.from_config(configured) == RetryPolicy(3, 2.0, 60.0)
    assert RetryPolicy.from_config({"backoff_seconds": 600}).max_backoff_seconds == 600.0


def test_target_from_snapshot() -> None:
    target = Target.from_snapshot({
        "endpoint": "https://example.com/hook", "http_method": "patch",
        "headers": {"X-A": "1"}, "timeout_seconds": 2.5, "signing_secret": "s",
    })  # fmt: skip
    assert target.endpoint == "https://example.com/hook"
    assert target.method == "PATCH" and target.timeout == 2.5
    assert target.headers == (("X-A", "1"),) and target.signing_secret == "s"
    bare = Target.from_snapshot({})
    assert bare.endpoint is None and bare.method == "POST" and bare.timeout == 10.0
    assert Target.from_snapshot(None) == bare


def test_contract_headers_win_over_the_triggers() -> None:
    target = Target.from_snapshot({
        "endpoint": "http://x/", "headers": {
            "Authorization": "Bearer t", "content-type": "text/plain",
            "idempotency-key": "mine", "X-Trigger-Id": "spoofed"},
    })  # fmt: skip
    headers = build_headers(target, "evt-1", "trg-1", b"{}")
    assert headers["Authorization"] == "Bearer t"
    assert headers.getall("Content-Type") == ["application/json"]
    assert headers.getall("Idempotency-Key") == ["evt-1"]
    assert headers["X-Event-Id"] == "evt-1"
    assert headers.getall("X-Trigger-Id") == ["trg-1"]
    assert "webhook-signature" not in headers
    ephemeral = build_headers(target, "evt-2", None, b"{}")
    assert "X-Trigger-Id" not in ephemeral  # a test run without a trigger


def test_signed_target_adds_standard_webhooks_headers() -> None:
    target = Target.from_snapshot({"endpoint": "http://x/", "signing_secret": "s"})
    headers = build_headers(target, "evt-1", "trg-1", b"{}", timestamp=1700000000)
    assert headers["webhook-id"] == "evt-1"
    assert headers["webhook-timestamp"] == "1700000000"
    assert headers["webhook-signature"].startswith("v1,")


def event(status: str = "pending", attempts: int = 0, base: int = 0,
          owed: int = 1) -> EventState:  # fmt: skip
    return EventState(id="e", trigger_id="t", payload="{}", delivery={},
                      execution_status=status, attempts=attempts, attempt_base=base,
                      publish_attempt=owed)  # fmt: skip


@pytest.mark.parametrize(
    ("state", "attempt", "done"),
    [(event(), 1, False),                                   # fresh
     (event("success", 1), 1, True),                         # redelivered after success
     (event("failed", 1), 1, True),
     (event("retrying", 1, owed=2), 1, True),                # attempt 1 done, 2 owed
     (event("retrying", 1, owed=2), 2, False),               # the owed retry
     (event("retrying", 2, owed=3), 2, True),
     (event("pending", 5, base=5, owed=6), 3, True),         # older series, replaced by replay
     (event("pending", 5, base=5, owed=6), 6, False),        # the replay's first attempt
     (event("published"), 1, True)],
)  # fmt: skip
def test_which_jobs_are_already_done(state: EventState, attempt: int, done: bool) -> None:
    assert state.has_done(attempt) is done


def outcome(result: AttemptResult, attempt: int = 1, base: int = 0, max_attempts: int = 3) -> str:
    target = Target.from_snapshot(
        {
            "endpoint": "http://x/",
            "retry": {"max_attempts": max_attempts, "backoff_seconds": 1, "max_backoff_seconds": 5},
        }
    )
    decided = JobProcessor._outcome(event(attempts=attempt - 1, base=base, owed=attempt),
                                    target, attempt, result)  # fmt: skip
    if decided.status == "retrying":
        assert decided.retry_at is not None
        assert 0.5 <= (decided.retry_at - decided.finished_at).total_seconds() <= 5
    else:
        assert decided.retry_at is None
    return decided.status


def test_outcomes_follow_the_series() -> None:
    ok, boom, bad = AttemptResult(200, 0.01), AttemptResult(500, 0.01), AttemptResult(404, 0.01)
    assert outcome(ok) == "success"
    assert outcome(bad) == "failed"
    assert outcome(boom, attempt=1) == "retrying"
    assert outcome(boom, attempt=2) == "retrying"
    assert outcome(boom, attempt=3) == "failed"  # max_attempts reached
    assert outcome(boom, attempt=7, base=5) == "retrying"  # a replay's second attempt
    assert outcome(boom, attempt=8, base=5) == "failed"
    slow = AttemptResult(429, 0.01, retry_after=4.0)
    target = Target.from_snapshot({"endpoint": "http://x/"})
    decided = JobProcessor._outcome(event(), target, 1, slow)
    assert decided.retry_at is not None
    assert (decided.retry_at - decided.finished_at).total_seconds() >= 3.99


def test_commit_point_is_the_lowest_unfinished_offset() -> None:
    progress = PartitionProgress()
    assert progress.commit_point() is None
    for offset in (10, 11, 12, 13):
        progress.started(offset)
    assert progress.commit_point() == 10
    progress.finished(12)
    progress.finished(11)
    assert progress.commit_point() == 10  # 10 still running: 11 and 12 must wait
    progress.finished(10)
    assert progress.commit_point() == 13
    progress.committed = 13
    assert progress.commit_point() is None  # nothing new
    progress.finished(13)
    assert progress.commit_point() == 14


def test_a_stored_error_shows_a_short_printable_excerpt_of_the_answer() -> None:
    body = b"line one\r\n\tline two\x00\x1b[31m" + b"x" * 500
    text = excerpt(body)
    assert text.startswith("line one line two")
    assert all(ch.isprintable() for ch in text)
    assert len(text) <= 120 and text.endswith("…")
    assert excerpt(b"\xff\xfe ok ") == "\ufffd\ufffd ok"
    assert excerpt("") == ""


def test_the_target_carries_its_rate_limit() -> None:
    limited = Target.from_snapshot({"endpoint": "http://a/", "rate_limit_per_second": 2})
    assert limited.rate_limit == 2.0
    assert Target.from_snapshot({"endpoint": "http://a/"}).rate_limit is None


def test_a_hole_in_the_offsets_is_read_again_until_it_fills_or_patience_runs_out() -> None:
    progress = PartitionProgress()
    assert not progress.skipped_to(40, now=0.0)  # the first record sets where we are
    progress.started(40)
    assert not progress.skipped_to(41, now=0.0)  # in order
    progress.started(41)
    progress.finished(40)
    progress.finished(41)
    # A fetch returned 52 next: 42-51 were skipped. Read again from 42 ...
    assert progress.skipped_to(52, now=1.0)
    assert progress.gap == (42, 1.0)
    assert progress.commit_point() == 42  # nothing past the hole is committed meanwhile
    assert progress.skipped_to(52, now=1.0 + GAP_PATIENCE / 2)
    assert progress.gap == (42, 1.0)  # the same hole, first seen at 1.0
    # ... until it fills,
    assert not progress.skipped_to(42, now=2.0)
    progress.started(42)
    progress.finished(42)
    assert progress.gap is None
    # or stays a hole for GAP_PATIENCE: then it is accepted.
    assert progress.skipped_to(60, now=10.0)
    assert not progress.skipped_to(60, now=10.0 + GAP_PATIENCE)
    progress.started(60)
    assert progress.gap is None and progress.commit_point() == 60
