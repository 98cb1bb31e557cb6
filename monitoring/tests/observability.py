"""What deploy/'s alert rules and Grafana dashboards read, and the real tools that check them.

APP_METRICS is the one list of the app's metrics the rules and panels use: the tests check that it covers
every mlops_* name they use and that the monitoring app declares each of them: monitoring/prometheus.py
(counters, histograms) or the collectors beside it (gauges read from the rollups).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
PROMETHEUS_CONFIG = DEPLOY / "prometheus" / "prometheus.yml"
RULES_DIR = DEPLOY / "prometheus" / "rules"
RULE_TESTS_DIR = DEPLOY / "prometheus" / "tests"
ALERTMANAGER_CONFIG = DEPLOY / "alertmanager" / "alertmanager.yml"
DASHBOARDS_DIR = DEPLOY / "grafana" / "dashboards"
DATASOURCES_DIR = DEPLOY / "grafana" / "provisioning" / "datasources"
#: Where the app declares its metrics: counters and histograms in prometheus.py, the database-derived gauges
#: in the collector modules beside it.
METRIC_DECLARATIONS = ROOT / "monitoring" / "prometheus.py"

#: The app's metrics that alert rules and dashboard panels use.
APP_METRICS = frozenset(
    {
        "mlops_predictions_total",
        "mlops_prediction_latency_seconds",
        "mlops_prediction_rejections_total",
        "mlops_feedback_total",
        "mlops_training_runs_total",
        "mlops_training_run_duration_seconds",
        "mlops_retraining_decisions_total",
        "mlops_batch_rows_total",
        "mlops_task_failures_total",
        "mlops_tasks_total",
        "mlops_model_live_score",
        "mlops_model_feedback_coverage",
        "mlops_model_score_threshold",
        "mlops_model_production_version",
        "mlops_shadow_disagreement_ratio",
        "mlops_queue_length",
        "mlops_worker_heartbeat_timestamp_seconds",
        "mlops_drift_score",
        "mlops_drift_detected",
        "mlops_model_drifting",
        "mlops_drift_share",
        "mlops_model_estimated_score",
    }
)
#: Series Prometheus makes itself.
PROMETHEUS_METRICS = frozenset({"ALERTS"})
#: Alerts that say a model got worse: Alertmanager sends them to the app's retraining webhook.
RETRAINING_ALERTS = frozenset(
    {
        "MLOpsLiveScoreBelowThreshold",
        "MLOpsModelDrifting",
        "MLOpsEstimatedScoreBelowThreshold",
        "MLOpsEstimatedScoreDropped",
    }
)

_HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
_KEYWORDS = frozenset(
    {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right", "offset", "bool"}
    | {"inf", "nan", "Inf", "NaN"}
)


def require_program(name: str, package: str) -> str:
    """The program's path; a missing one skips the test, or fails it under REQUIRE_SERVICES=True."""
    path = shutil.which(name)
    if path:
        return path
    reason = f"{name} is not installed (apt-get install --no-install-recommends {package})"
    if os.environ.get("REQUIRE_SERVICES") == "True":
        pytest.fail(f"required program missing: {reason}", pytrace=False)
    pytest.skip(reason)


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (Grafana's $variables allowed)."""
    text = re.sub(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|`[^`]*`', '""', expr)  # strings
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # ranges and subqueries
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)  # label lists
    text = re.sub(r"\$\{?\w+\}?", " ", text)  # Grafana variables outside selectors
    names = set()
    for match in re.finditer(r"(?<![\w.])([A-Za-z_:][\w:]*)\s*(\()?", text):
        name, call = match.groups()
        if not call and name not in _KEYWORDS:
            names.add(name)
    return names


def base_name(metric: str, known: set[str] | frozenset[str]) -> str:
    """A histogram's _bucket/_sum/_count series belong to the histogram's name."""
    for suffix in _HISTOGRAM_SUFFIXES:
        if metric.endswith(suffix) and metric[: -len(suffix)] in known:
            return metric[: -len(suffix)]
    return metric


def rule_groups() -> list[dict[str, Any]]:
    groups = []
    for path in sorted(RULES_DIR.glob("*.yml")):
        groups.extend(yaml.safe_load(path.read_text())["groups"])
    return groups


def alert_rules() -> dict[str, dict[str, Any]]:
    return {rule["alert"]: rule for group in rule_groups() for rule in group["rules"] if "alert" in rule}


def dashboards() -> dict[str, dict[str, Any]]:
    return {path.name: json.loads(path.read_text()) for path in sorted(DASHBOARDS_DIR.glob("*.json"))}


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel, including those inside collapsed rows."""
    found = []
    for panel in dashboard["panels"]:
        found.append(panel)
        found.extend(panel.get("panels", []))
    return found


def datasource_types() -> dict[str, str]:
    """Provisioned data sources: uid -> type."""
    found = {}
    for path in sorted(DATASOURCES_DIR.glob("*.yml")):
        for source in yaml.safe_load(path.read_text())["datasources"]:
            found[source["uid"]] = source["type"]
    return found


def prometheus_queries() -> list[tuple[str, str, str]]:
    """(dashboard file, panel or variable title, PromQL) of every Prometheus query in the dashboards."""
    types = datasource_types()
    queries = []
    for name, dashboard in dashboards().items():
        for panel in panels(dashboard):
            for target in panel.get("targets", []):
                source = target.get("datasource") or panel.get("datasource") or {}
                if types.get(source.get("uid")) == "prometheus":
                    queries.append((name, panel["title"], target["expr"]))
        for variable in dashboard.get("templating", {}).get("list", []):
            if variable.get("type") == "query" and types.get(variable["datasource"]["uid"]) == "prometheus":
                query = (
                    variable["query"]["query"] if isinstance(variable["query"], dict) else variable["query"]
                )
                selector = re.fullmatch(r"label_values\((.*),\s*\w+\)", query)
                queries.append((name, f"${variable['name']}", selector.group(1) if selector else query))
    return queries


def declared_app_metrics() -> set[str]:
    """mlops_* names declared by the monitoring app's modules (monitoring/*.py, not its tests)."""
    names = set()
    for path in sorted(METRIC_DECLARATIONS.parent.glob("*.py")):
        names.update(re.findall(r"[\"'](mlops_[a-z0-9_]+)[\"']", path.read_text()))
    return names


def django_prometheus_metrics() -> set[str]:
    """The names the installed django-prometheus exports: prometheus_client adds `_total` to a counter's
    name on the wire (django_http_responses_total_by_status_view_method_total)."""
    from django_prometheus.middleware import Metrics

    names = set()
    for metric in vars(Metrics.get_instance()).values():
        name, kind = getattr(metric, "_name", None), getattr(metric, "_type", None)
        if name and kind:
            names.add(f"{name}_total" if kind == "counter" else name)
    return names
