"""W3C traceparent: parsing rejects what the recommendation rejects, minting is valid."""

from __future__ import annotations

import pytest

from triggerd.domain.tracecontext import (
    child_of,
    continue_or_start,
    flags,
    new_traceparent,
    parse_traceparent,
    span_id,
    trace_id,
)

VALID = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def test_a_valid_traceparent_parses_as_itself() -> None:
    assert parse_traceparent(VALID) == VALID
    assert parse_traceparent(f"  {VALID} ") == VALID
    assert trace_id(VALID) == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert span_id(VALID) == "00f067aa0ba902b7"
    assert flags(VALID) == 1


@pytest.mark.parametrize("value", [
    None, "", "garbage", VALID[:-1], VALID + "0",
    VALID.upper(),                                        # uppercase hex
    "01" + VALID[2:],                                     # a version we do not speak
    "ff" + VALID[2:],
    "00-00000000000000000000000000000000-00f067aa0ba902b7-01",  # all-zero trace id
    "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",  # all-zero parent id
    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g",
    "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
])  # fmt: skip
def test_invalid_traceparents_are_none(value: str | None) -> None:
    assert parse_traceparent(value) is None


def test_minted_traceparents_are_valid_sampled_and_distinct() -> None:
    minted = {new_traceparent() for _ in range(1000)}
    assert len(minted) == 1000
    assert len({trace_id(t) for t in minted}) == 1000
    for value in minted:
        assert parse_traceparent(value) == value
        assert flags(value) == 1


def test_a_child_keeps_trace_and_flags_with_a_new_span() -> None:
    unsampled = VALID[:-2] + "00"
    child = child_of(unsampled)
    assert parse_traceparent(child) == child
    assert trace_id(child) == trace_id(VALID)
    assert span_id(child) != span_id(VALID)
    assert child.endswith("-00")


def test_continue_or_start() -> None:
    own, caller = continue_or_start(VALID)
    assert caller == VALID
    assert trace_id(own) == trace_id(VALID) and span_id(own) != span_id(VALID)
    own, caller = continue_or_start("00-bogus")
    assert caller is None
    assert parse_traceparent(own) == own and trace_id(own) != trace_id(VALID)
