"""The alert rules in deploy/prometheus/ are valid, proved by promtool's unit tests, and read real metrics."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from monitoring.tests.observability import (
    APP_METRICS,
    METRIC_DECLARATIONS,
    PROMETHEUS_CONFIG,
    PROMETHEUS_METRICS,
    RULE_TESTS_DIR,
    RULES_DIR,
    alert_rules,
    base_name,
    dashboards,
    declared_app_metrics,
    django_prometheus_metrics,
    metric_names,
    prometheus_queries,
    require_program,
)

#: Alerts about one model: their expression keeps the `model` label.
MODEL_ALERTS = {
    "MLOpsLiveScoreBelowThreshold",
    "MLOpsModelDrifting",
    "MLOpsEstimatedScoreBelowThreshold",
    "MLOpsEstimatedScoreDropped",
    "MLOpsNoPredictions",
    "MLOpsPredictionLatencyHigh",
}


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    binary = require_program("promtool", "prometheus")
    return subprocess.run([binary, *args], capture_output=True, text=True, timeout=120, cwd=RULES_DIR.parent)


def _rule_tests() -> list[dict[str, Any]]:
    return [yaml.safe_load(path.read_text()) for path in sorted(RULE_TESTS_DIR.glob("*.yml"))]


def _expected_alerts() -> tuple[set[str], set[str]]:
    """Alert names some unit test expects firing, and names some test expects silent."""
    firing, silent = set(), set()
    for document in _rule_tests():
        for case in document["tests"]:
            for check in case.get("alert_rule_test", []):
                (firing if check.get("exp_alerts") else silent).add(check["alertname"])
    return firing, silent


def _used_metrics() -> dict[str, set[str]]:
    """Metric name -> where it is used, over every rule and Prometheus panel query."""
    used: dict[str, set[str]] = {}
    for name, rule in alert_rules().items():
        for metric in metric_names(rule["expr"]):
            used.setdefault(metric, set()).add(f"rule {name}")
    for dashboard, title, expr in prometheus_queries():
        for metric in metric_names(expr):
            used.setdefault(metric, set()).add(f"{dashboard}: {title}")
    return used


def test_promtool_accepts_the_rule_files():
    result = promtool("check", "rules", *map(str, sorted(RULES_DIR.glob("*.yml"))))

    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in result.stdout


def test_every_alert_passes_its_promtool_unit_tests():
    result = promtool("test", "rules", *map(str, sorted(RULE_TESTS_DIR.glob("*.yml"))))

    assert result.returncode == 0, result.stdout + result.stderr
    assert "FAILED" not in result.stdout + result.stderr


def test_the_unit_tests_see_every_alert_fire_and_stay_silent():
    firing, silent = _expected_alerts()
    alerts = set(alert_rules())

    assert alerts - firing == set(), "alerts no unit test sees firing"
    assert alerts - silent == set(), "alerts no unit test sees silent"
    assert (firing | silent) - alerts == set(), "unit tests of alerts that do not exist"


def test_the_unit_tests_load_the_rule_files_prometheus_loads():
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    loaded = {path for pattern in config["rule_files"] for path in PROMETHEUS_CONFIG.parent.glob(pattern)}

    assert loaded == set(RULES_DIR.glob("*.yml"))
    for document in _rule_tests():
        tested = {(RULE_TESTS_DIR / name).resolve() for name in document["rule_files"]}
        assert tested == {path.resolve() for path in loaded}


def test_every_alert_has_a_severity_a_summary_and_a_description():
    for name, rule in alert_rules().items():
        assert name.startswith("MLOps"), name
        assert rule["labels"]["severity"] in ("warning", "critical"), name
        assert rule["annotations"]["summary"], name
        assert rule["annotations"]["description"], name
        assert rule.get("for"), f"{name} fires on a single evaluation"


def test_model_alerts_name_their_model_in_the_summary():
    for name, rule in alert_rules().items():
        assert ("{{ $labels.model }}" in rule["annotations"]["summary"]) == (name in MODEL_ALERTS), name


def test_promtool_accepts_the_configuration_with_its_files_in_place(tmp_path):
    # Files the configuration names by their container path (the scrape token, …) are stand-ins here.
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())

    def rebase(node: Any) -> Any:
        if isinstance(node, dict):
            for key, value in node.items():
                if key.endswith("_file") and isinstance(value, str):
                    stand_in = tmp_path / Path(value).name
                    stand_in.write_text("a-token\n")
                    node[key] = str(stand_in)
                else:
                    rebase(value)
        elif isinstance(node, list):
            for item in node:
                rebase(item)
        return node

    (tmp_path / "rules").mkdir()
    for path in RULES_DIR.glob("*.yml"):
        (tmp_path / "rules" / path.name).write_text(path.read_text())
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(rebase(config)))

    result = promtool("check", "config", str(tmp_path / "prometheus.yml"))

    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout
    assert config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] == ["alertmanager:9093"]


def test_the_list_of_app_metrics_covers_every_rule_and_panel():
    used = _used_metrics()
    django = django_prometheus_metrics()
    app = {base_name(metric, APP_METRICS) for metric in used if metric.startswith("mlops_")}
    others = {
        metric: places
        for metric, places in used.items()
        if not metric.startswith("mlops_")
        and metric not in PROMETHEUS_METRICS
        and base_name(metric, django) not in django
    }

    assert app - APP_METRICS == set(), "add these to APP_METRICS in monitoring/tests/observability.py"
    assert others == {}, "metrics neither the app, django-prometheus nor Prometheus export"
    assert APP_METRICS - app == set(), "APP_METRICS lists metrics nothing uses"


def test_the_django_metrics_used_are_the_installed_django_prometheus_names():
    django = django_prometheus_metrics()
    used = {metric for metric in _used_metrics() if metric.startswith("django_")}

    assert used, "no rule or panel reads the request metrics"
    assert {base_name(metric, django) for metric in used} <= django


def test_every_app_metric_a_rule_or_panel_uses_is_declared_by_the_app():
    if not METRIC_DECLARATIONS.exists():
        pytest.skip(
            "monitoring/prometheus.py does not exist yet: the app declares no metrics to check against"
        )
    declared = declared_app_metrics()

    missing = sorted(APP_METRICS - declared)

    assert missing == [], "used by deploy/ but declared by no module of monitoring/"


def test_dashboards_exist_for_the_rules_to_point_at():
    assert {"mlops-overview.json", "mlops-model.json"} <= set(dashboards())
