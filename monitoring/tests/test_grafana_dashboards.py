"""deploy/grafana/: dashboards that load and query real metrics, data sources that link logs and traces."""

from __future__ import annotations

import re

import yaml

from monitoring.tests.observability import (
    DASHBOARDS_DIR,
    DATASOURCES_DIR,
    dashboards,
    datasource_types,
    panels,
    prometheus_queries,
)

PROVIDERS = DASHBOARDS_DIR.parent / "provisioning" / "dashboards"


def test_every_dashboard_is_json_with_its_own_uid_and_unique_panel_ids():
    found = dashboards()
    uids = [dashboard["uid"] for dashboard in found.values()]

    assert set(found) >= {"mlops-overview.json", "mlops-model.json"}
    assert len(uids) == len(set(uids))
    for name, dashboard in found.items():
        ids = [panel["id"] for panel in panels(dashboard)]
        assert len(ids) == len(set(ids)), name
        assert dashboard["title"], name
        assert "mlops" in dashboard["tags"], name


def test_every_panel_reads_a_provisioned_data_source():
    types = datasource_types()
    for name, dashboard in dashboards().items():
        for panel in panels(dashboard):
            if panel["type"] == "row":
                continue
            assert panel["datasource"]["uid"] in types, f"{name}: {panel['title']}"
            assert panel["targets"], f"{name}: {panel['title']} has no query"
            for target in panel["targets"]:
                assert target["expr"].strip(), f"{name}: {panel['title']}"


def test_the_overview_shows_volume_scores_drift_latency_rejections_queues_workers_and_training():
    queries = " ".join(expr for name, _, expr in prometheus_queries() if name == "mlops-overview.json")

    for metric in (
        "mlops_predictions_total",
        "mlops_model_live_score",
        "mlops_model_estimated_score",
        "mlops_model_score_threshold",
        "mlops_model_drifting",
        "mlops_prediction_latency_seconds_bucket",
        "mlops_prediction_rejections_total",
        "mlops_queue_length",
        "mlops_worker_heartbeat_timestamp_seconds",
        "mlops_training_runs_total",
        "mlops_retraining_decisions_total",
    ):
        assert metric in queries, metric
    assert "histogram_quantile(0.5," in queries
    assert "histogram_quantile(0.99," in queries


def test_the_model_dashboard_filters_every_app_query_by_its_model_variable():
    dashboard = dashboards()["mlops-model.json"]
    variables = {variable["name"] for variable in dashboard["templating"]["list"]}

    assert "model" in variables
    for name, title, expr in prometheus_queries():
        if name == "mlops-model.json" and not title.startswith("$model"):
            assert 'model="$model"' in expr, title


def test_dashboards_are_provisioned_from_the_folder_compose_mounts():
    compose = yaml.safe_load((DASHBOARDS_DIR.parents[2] / "docker-compose.yml").read_text())
    providers = [
        provider
        for path in sorted(PROVIDERS.glob("*.yml"))
        for provider in yaml.safe_load(path.read_text())["providers"]
    ]
    mounts = dict(volume.rsplit(":", 2)[:2] for volume in compose["services"]["grafana"]["volumes"])

    assert [provider["options"]["path"] for provider in providers] == [mounts["./deploy/grafana/dashboards"]]
    assert mounts["./deploy/grafana/provisioning"] == "/etc/grafana/provisioning"


def test_prometheus_loki_and_tempo_are_provisioned_and_link_traces_to_logs():
    types = datasource_types()
    sources = {
        source["uid"]: source
        for path in sorted(DATASOURCES_DIR.glob("*.yml"))
        for source in yaml.safe_load(path.read_text())["datasources"]
    }

    assert types == {"prometheus": "prometheus", "loki": "loki", "tempo": "tempo"}
    assert sources["loki"]["url"] == "http://loki:3100"
    assert sources["tempo"]["url"] == "http://tempo:3200"
    # Logs -> traces: the trace_id of a JSON log line opens the trace in Tempo.
    derived = {field["name"]: field for field in sources["loki"]["jsonData"]["derivedFields"]}
    assert derived["trace_id"]["datasourceUid"] == "tempo"
    line = '{"event": "prediction", "request_id": "r-1", "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736"}'
    assert re.search(derived["trace_id"]["matcherRegex"], line).group(1) == (
        "4bf92f3577b34da6a3ce929d0e0e4736"
    )
    assert re.search(derived["request_id"]["matcherRegex"], line).group(1) == "r-1"
    # Traces -> logs: a span opens the Loki lines that carry its trace id.
    to_logs = sources["tempo"]["jsonData"]["tracesToLogsV2"]
    assert to_logs["datasourceUid"] == "loki"
    assert "$${__trace.traceId}" in to_logs["query"]
    for field in derived.values():
        assert "$${__value.raw}" in field["url"], "a single $ would be taken for an environment variable"
