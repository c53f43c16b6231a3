"""deploy/grafana and deploy/prometheus use only metrics the worker really exports.

Every ``commentflow_*`` series in the dashboard's and the alert rules' PromQL must be one that
:class:`workers.metrics.PipelineMetrics` exposes (``_total`` of a counter, ``_bucket``/``_sum``/
``_count`` of a histogram, a gauge), with only its label names in selectors. The rules also pass
``promtool check rules`` and the unit tests in ``alerts.test.yml`` (Debian's ``prometheus``
package, ``make system-deps``): a missing promtool fails, never skips.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from workers.metrics import PipelineMetrics

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "deploy" / "grafana" / "commentflow.json"
ALERTS = REPO / "deploy" / "prometheus" / "alerts.yml"
ALERT_TESTS = REPO / "deploy" / "prometheus" / "alerts.test.yml"
# Series outside the worker's registry that the rules may use: Prometheus' own scrape health.
EXTERNAL = {"up"}
_SELECTOR = re.compile(r"\b(commentflow_[a-z0-9_]+)\s*(?:\{([^}]*)\})?")
_LABEL = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)")


def exported() -> dict[str, set[str]]:
    """Series name -> label names, as PipelineMetrics exposes them on /metrics."""
    series: dict[str, set[str]] = {}
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}
    # prometheus_client has no public accessor for a collector's label names (or for the
    # collectors of a registry); exposition alone would miss labelled series never observed.
    for collector in PipelineMetrics().registry._collector_to_names:
        labels = set(getattr(collector, "_labelnames", ()))
        for family in collector.describe():
            for suffix in suffixes[family.type]:
                series[family.name + suffix] = labels | ({"le"} if suffix == "_bucket" else set())
    return series


def check_expression(expr: str, series: dict[str, set[str]]) -> list[str]:
    """Problems of one PromQL expression: unknown metric names, unknown selector labels."""
    problems = []
    found = _SELECTOR.findall(expr)
    if not found and not any(re.search(rf"\b{name}\b", expr) for name in EXTERNAL):
        problems.append(f"no commentflow metric in {expr!r}")
    for name, selector in found:
        if name not in series:
            problems.append(f"{name} is not a metric of workers/metrics.py")
            continue
        unknown = set(_LABEL.findall(selector)) - series[name]
        if unknown:
            problems.append(f"{name} has no label {sorted(unknown)}")
    return problems


def _dashboard_expressions() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = []
    for panel in dashboard["panels"]:
        exprs += [target["expr"] for target in panel.get("targets", [])]
    return exprs


def _rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def test_the_registry_view_matches_the_exposition() -> None:
    """exported() describes what /metrics shows (checked on the series present at start)."""
    text = PipelineMetrics().exposition().decode()
    shown = {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line[:1] != "#"}
    series = exported()
    assert shown - {n for n in shown if n.endswith("_created")} <= set(series)
    assert "commentflow_end_to_end_latency_seconds_bucket" in series
    assert series["commentflow_consumer_lag_messages"] == {"topic", "partition"}


def test_dashboard_uses_only_exported_metrics() -> None:
    series = exported()
    exprs = _dashboard_expressions()
    assert len(exprs) >= 20
    problems = [p for expr in exprs for p in check_expression(expr, series)]
    assert not problems, problems


def test_dashboard_covers_what_the_issue_asks_for() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "commentflow" and dashboard["schemaVersion"] >= 36
    joined = "\n".join(_dashboard_expressions())
    for needle in (
        "sum by (outcome) (rate(commentflow_events_total",  # throughput by outcome
        "max by (topic, partition) (commentflow_consumer_lag_messages)",  # lag per partition
        "commentflow_batch_size_events_bucket",
        "commentflow_inference_seconds_bucket",
        "commentflow_end_to_end_latency_seconds_bucket",
        "sum by (code) (rate(commentflow_dead_letters_total",
        "sum by (reason) (rate(commentflow_media_errors_total",
    ):
        assert needle in joined, needle
    # every panel queries the datasource variable, so the JSON imports into any Grafana
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    assert "datasource" in variables
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}", panel["title"]


def test_the_check_catches_a_wrong_name() -> None:
    series = exported()
    assert check_expression("rate(commentflow_events_total[5m])", series) == []
    assert check_expression("rate(commentflow_event_total[5m])", series)
    assert check_expression('commentflow_events_total{code="x"}', series)
    assert check_expression("rate(kafka_consumergroup_lag[5m])", series)


def test_alert_rules_use_only_exported_metrics() -> None:
    series = exported()
    rules = _rules()
    names = {rule["alert"] for rule in rules}
    for wanted in (
        "CommentflowLagGrowing",
        "CommentflowDeadLetterRatioHigh",
        "CommentflowWorkerNotReady",
        "CommentflowInferenceErrors",
        "CommentflowRedisErrors",
    ):
        assert wanted in names
    problems = [p for rule in rules for p in check_expression(rule["expr"], series)]
    assert not problems, problems


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    tool = shutil.which("promtool")
    assert tool, "promtool is not installed: make system-deps (apt-get install prometheus)"
    return subprocess.run(
        [tool, *args], capture_output=True, text=True, timeout=120, check=False, cwd=REPO
    )


def test_promtool_checks_the_rules() -> None:
    result = _promtool("check", "rules", str(ALERTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(_rules())} rules found" in result.stdout


def test_promtool_unit_tests_of_two_alerts() -> None:
    result = _promtool("test", "rules", str(ALERT_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr


def test_dashboard_queries_parse(tmp_path: Path) -> None:
    """Every dashboard query is valid PromQL: promtool checks them as recording rules, with
    Grafana's $__rate_interval replaced by a plain range."""
    rules = [
        {"record": f"commentflow:query_{i}", "expr": expr.replace("$__rate_interval", "5m")}
        for i, expr in enumerate(_dashboard_expressions())
    ]
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = _promtool("check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_rejects_a_broken_rule(tmp_path: Path) -> None:
    """The check above means something: a PromQL syntax error fails it."""
    broken = tmp_path / "alerts.yml"
    broken.write_text(ALERTS.read_text().replace("> 0.05", "> > 0.05"))
    assert broken.read_text() != ALERTS.read_text()
    assert _promtool("check", "rules", str(broken)).returncode != 0


@pytest.mark.parametrize("path", [DASHBOARD, ALERTS, ALERT_TESTS])
def test_files_are_documented(path: Path) -> None:
    assert str(path.relative_to(REPO)) in (REPO / "README.md").read_text()
