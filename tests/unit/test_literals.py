"""Multi-row statements cut to size (triggerd.store.literals.statements)."""

from __future__ import annotations

from triggerd.store.literals import statements


def test_no_rows_make_no_statement() -> None:
    assert statements("INSERT INTO t VALUES ", []) == []


def test_rows_are_joined_under_the_limit_and_split_past_it() -> None:
    rows = [f"({i})" for i in range(10)]  # 3 characters each, 4 with the comma
    assert statements("H ", rows, " T") == ["H " + ",".join(rows) + " T"]
    split = statements("H ", rows, " T", limit=12)
    assert split == ["H (0),(1),(2) T", "H (3),(4),(5) T", "H (6),(7),(8) T", "H (9) T"]


def test_a_row_over_the_limit_goes_alone() -> None:
    assert statements("H ", ["(1)", "(" + "x" * 50 + ")", "(2)"], limit=10) == [
        "H (1)", "H (" + "x" * 50 + ")", "H (2)"]  # fmt: skip
