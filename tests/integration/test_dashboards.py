"""The operator's files: config/prometheus/alerts.yml passes `promtool check rules` and
its rules fire when meant to (`promtool test rules`); config/grafana/triggerd.json is a
well-formed dashboard; and every metric and label either of them names is one the
daemon's /metrics exposes."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.parser import text_string_to_metric_families

from triggerd.metrics import Metrics

ROOT = Path(__file__).resolve().parents[2]
ALERTS = ROOT / "config" / "prometheus" / "alerts.yml"
DASHBOARD = ROOT / "config" / "grafana" / "triggerd.json"
# Series that come from Prometheus itself or an exporter beside it, not from triggerd.
EXTERNAL = {"up": {"job", "instance"}, "probe_success": {"job", "instance"}}
TARGET_LABELS = {"job", "instance"}  # added by Prometheus to every scraped series
_NAME = re.compile(r"\btriggerd_[a-z0-9_]+")
_SELECTOR = re.compile(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\s*\{([^}]*)\}")
_MATCHER = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)")


def promtool() -> str:
    found = shutil.which("promtool") or next(
        (p for p in ("/usr/bin/promtool", "/usr/sbin/promtool") if os.access(p, os.X_OK)), None)
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("promtool is missing: .ci/install-system-deps.sh installs it (prometheus)")
        pytest.skip("promtool is not installed (Debian package prometheus)")
    return found


def exposed() -> dict[str, set[str]]:
    """Every series name /metrics can carry (counters with _total, histograms with
    _bucket/_sum/_count), with its label names."""
    metrics = Metrics()
    labels: dict[str, set[str]] = {}
    for attribute in vars(metrics).values():
        if isinstance(attribute, Counter | Gauge | Histogram):
            labels[attribute._name] = set(attribute._labelnames)
    names: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(metrics.render().decode()):
        own = labels.get(family.name, set()) | labels.get(f"{family.name}_total", set())
        if family.type == "counter":
            names[f"{family.name}_total"] = own
        elif family.type == "histogram":
            for suffix in ("_bucket", "_sum", "_count"):
                names[family.name + suffix] = own | ({"le"} if suffix == "_bucket" else set())
        else:
            names[family.name] = own
    return names


def alert_rules() -> list[dict[str, Any]]:
    document = yaml.safe_load(ALERTS.read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def dashboard_queries() -> list[str]:
    queries = [t["expr"] for p in dashboard()["panels"] for t in p.get("targets", [])]
    for variable in dashboard()["templating"]["list"]:
        if variable["type"] == "query":
            queries.append(variable["query"]["query"])
    return queries


def check_names(where: str, expressions: list[str]) -> None:
    series = exposed()
    for expr in expressions:
        for name in _NAME.findall(expr):
            assert name in series, f"{where}: {name} is not exposed by /metrics ({expr})"
        for name, matchers in _SELECTOR.findall(expr):
            known = series.get(name) if name.startswith("triggerd_") else EXTERNAL.get(name)
            assert known is not None, f"{where}: {name} is neither ours nor a known series"
            for label in _MATCHER.findall(matchers):
                assert label in known | TARGET_LABELS, f"{where}: {name} has no label {label}"


def test_alert_rules_pass_promtool() -> None:
    result = subprocess.run([promtool(), "check", "rules", str(ALERTS)], capture_output=True,
                            text=True, check=False)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in result.stdout


def test_alert_rules_fire_when_meant_to(tmp_path: Path) -> None:
    """promtool's rule unit tests, on synthetic series: the alerts that need only
    triggerd's own metrics fire on the failure they name, and not on a healthy one.
    (On a copy without annotations: promtool compares those too, texts and all.)"""
    rules = yaml.safe_load(ALERTS.read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            rule.pop("annotations", None)
    bare = tmp_path / "alerts.yml"
    bare.write_text(yaml.safe_dump(rules))
    tests = {
        "rule_files": [str(bare)],
        "evaluation_interval": "1m",
        "tests": [{
            "interval": "1m",
            "input_series": [
                # Fires 3 s late, every minute: p99 far above 1 s.
                {"series": 'triggerd_fire_delay_seconds_bucket{job="triggerd",le="1"}',
                 "values": "0+0x20"},
                {"series": 'triggerd_fire_delay_seconds_bucket{job="triggerd",le="5"}',
                 "values": "0+60x20"},
                {"series": 'triggerd_fire_delay_seconds_bucket{job="triggerd",le="+Inf"}',
                 "values": "0+60x20"},
                # A worker that crash-loops on one instance; the api is fine.
                {"series": 'triggerd_role_up{job="triggerd",instance="a",role="worker"}',
                 "values": "0x20"},
                {"series": 'triggerd_role_up{job="triggerd",instance="a",role="api"}',
                 "values": "1x20"},
                # One endpoint's circuit open for half an hour; another one's closed.
                {"series": 'triggerd_endpoints{job="triggerd",state="open"}',
                 "values": "1x40"},
                {"series": 'triggerd_endpoints{job="triggerd",state="closed"}',
                 "values": "5x40"},
                # Two triggers auto-disabled at minute 5.
                {"series": 'triggerd_triggers_disabled_total{job="triggerd"}',
                 "values": "0x5 2x35"},
                # The backstop re-sent 3 lost jobs at minute 5.
                {"series": 'triggerd_jobs_reowed_total{job="triggerd"}',
                 "values": "0x5 3x35"},
                # Active events, and no retention process at all (its counter is absent).
                {"series": 'triggerd_events{job="triggerd",retention_status="active"}',
                 "values": "500x100"},
            ],
            "alert_rule_test": [
                {"eval_time": "10m", "alertname": "TriggerdFiringLate",
                 "exp_alerts": [{"exp_labels": {"severity": "warning"}}]},
                {"eval_time": "10m", "alertname": "TriggerdRoleNotRunning",
                 "exp_alerts": [{"exp_labels": {"severity": "critical", "instance": "a",
                                                "role": "worker"}}]},
                {"eval_time": "30m", "alertname": "TriggerdRetentionBehind", "exp_alerts": []},
                {"eval_time": "90m", "alertname": "TriggerdRetentionBehind",
                 "exp_alerts": [{"exp_labels": {"severity": "warning"}}]},
                {"eval_time": "10m", "alertname": "TriggerdPublishFailing", "exp_alerts": []},
                {"eval_time": "10m", "alertname": "TriggerdEndpointCircuitOpen",
                 "exp_alerts": []},
                {"eval_time": "20m", "alertname": "TriggerdEndpointCircuitOpen",
                 "exp_alerts": [{"exp_labels": {"severity": "warning"}}]},
                {"eval_time": "10m", "alertname": "TriggerdTriggersAutoDisabled",
                 "exp_alerts": [{"exp_labels": {"severity": "warning"}}]},
                {"eval_time": "4m", "alertname": "TriggerdJobsLost", "exp_alerts": []},
                {"eval_time": "10m", "alertname": "TriggerdJobsLost",
                 "exp_alerts": [{"exp_labels": {"severity": "warning"}}]},
                {"eval_time": "30m", "alertname": "TriggerdJobsLost", "exp_alerts": []},
            ],
        }],
    }  # fmt: skip
    path = tmp_path / "alerts_test.yml"
    path.write_text(yaml.safe_dump(tests))
    result = subprocess.run([promtool(), "test", "rules", str(path)], capture_output=True,
                            text=True, check=False)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


def test_alert_rules_have_what_an_operator_needs() -> None:
    names = [rule["alert"] for rule in alert_rules()]
    assert len(names) == len(set(names))
    for rule in alert_rules():
        assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]


def test_dashboard_is_well_formed() -> None:
    board = dashboard()
    assert board["uid"] and board["title"] == "triggerd"
    panels = board["panels"]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    titles = {p["title"] for p in panels}
    for wanted in ("Fires by type and source", "Fire delay (publish time − due time)",
                   "Deliveries by outcome", "Delivery attempts", "Delivery latency",
                   "Schedules by state", "Events by retention state",
                   "Roles running (per process)"):  # fmt: skip
        assert wanted in titles, wanted
    variables = {v["name"] for v in board["templating"]["list"]}
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            used = set(re.findall(r"\$(\w+)", target["expr"])) - {"__rate_interval", "__range"}
            assert used <= variables, (panel["title"], used - variables)


def test_every_metric_named_in_alerts_and_dashboard_is_exposed() -> None:
    check_names("alerts.yml", [rule["expr"] for rule in alert_rules()])
    check_names("triggerd.json", dashboard_queries())


def test_the_name_check_catches_a_typo() -> None:
    with pytest.raises(AssertionError, match="triggerd_fire_delays_seconds"):
        check_names("x", ["rate(triggerd_fire_delays_seconds_bucket[5m])"])
    with pytest.raises(AssertionError, match="no label state"):
        check_names("x", ['triggerd_events{state="active"}'])
