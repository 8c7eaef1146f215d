"""The documentation in the repository stays true to the code and self-contained: every
setting and every metric documented, no reference to a file outside the repository,
and every relative link pointing at a file (and heading) that exists."""

from __future__ import annotations

import re
import subprocess
from dataclasses import fields
from pathlib import Path

import pytest

from triggerd.config import PREFIX, Settings
from triggerd.metrics import Metrics

ROOT = Path(__file__).resolve().parents[2]
# The contract's folder beside the repository and its section sign (spelled so that this
# file does not match itself).
OUTSIDE = (".." + "/shared", "\u00a7")
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def read(name: str) -> str:
    return (ROOT / name).read_text(encoding="utf-8")


def test_the_docs_exist() -> None:
    names = {path.name for path in DOCS}
    assert {"README.md", "api.md", "configuration.md", "operations.md", "architecture.md",
            "performance.md"} <= names  # fmt: skip


def test_every_setting_is_documented_with_a_default() -> None:
    text = read("docs/configuration.md")
    rows = re.findall(r"^\| `(TRIGGERD_[A-Z0-9_]+)` \| ([^|]+) \| ([^|]+)", text, re.MULTILINE)
    documented = {name: (default.strip(), meaning.strip()) for name, default, meaning in rows}
    # Fields read from other variables (OTEL_*) say so in their metadata.
    settings = {PREFIX + field.name.upper() for field in fields(Settings)
                if "variables" not in field.metadata}  # fmt: skip
    assert sorted(settings - set(documented)) == [], "settings missing from the table"
    assert sorted(set(documented) - settings) == [], "table rows that are not settings"
    for name, (default, meaning) in documented.items():
        assert default and meaning, name


def test_every_metric_is_documented() -> None:
    rendered = Metrics().render().decode()
    served = set(re.findall(r"^# TYPE (triggerd_\w+) ", rendered, re.MULTILINE))
    # prometheus_client adds a `<counter>_created` gauge beside each counter's `_total`.
    served = {name for name in served if not name.endswith("_created")}
    assert len(served) >= 10
    text = read("docs/operations.md")
    table = set(re.findall(r"^\| `(triggerd_\w+)", text, re.MULTILINE))
    assert sorted(served - table) == [], "metrics missing from the table in docs/operations.md"
    named = {re.sub(r"_(bucket|sum|count)$", "", name)
             for name in re.findall(r"\btriggerd_\w+", text)}  # fmt: skip
    assert sorted(named - served) == [], "docs/operations.md names metrics nobody serves"


@pytest.mark.parametrize("path", DOCS, ids=lambda p: p.name)
def test_no_reference_outside_the_repository(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    for needle in (*OUTSIDE, "SPEC"):
        assert needle not in text, f"{path.name} refers to {needle!r}"


def _anchor(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces as dashes."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    return {_anchor(line.lstrip("#")) for line in path.read_text(encoding="utf-8").splitlines()
            if line.startswith("#")}  # fmt: skip


@pytest.mark.parametrize("path", DOCS, ids=lambda p: p.name)
def test_relative_links_resolve(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target):
            continue  # an absolute URL
        file_part, _, fragment = target.partition("#")
        linked = (path.parent / file_part).resolve() if file_part else path
        assert linked.is_file(), f"{path.name}: {target} does not exist"
        assert ROOT in linked.parents, f"{path.name}: {target} leaves the repository"
        if fragment and linked.suffix == ".md":
            assert fragment in _anchors(linked), f"{path.name}: no heading for {target}"


def test_no_file_of_the_repository_points_outside_it() -> None:
    """Code, tests, settings and scripts included: a reader who clones the repository
    has everything a comment or a message refers to."""
    listed = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True,
                            check=True).stdout.split()  # fmt: skip
    offenders = []
    for name in listed:
        path = ROOT / name
        if path.suffix in {".png", ".js", ".css"} and "static" in path.parts:
            continue  # vendored and generated assets
        if not path.is_file() or path.suffix in {".png", ".ico"}:
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        offenders += [f"{name}: {needle!r}" for needle in OUTSIDE if needle in text]
    assert offenders == []
