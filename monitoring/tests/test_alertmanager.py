"""deploy/alertmanager/: model alerts reach the app's retraining webhook, checked by amtool."""

from __future__ import annotations

import subprocess
from urllib.parse import urlsplit

import yaml
from django.urls import resolve

from monitoring.tests.observability import (
    ALERTMANAGER_CONFIG,
    RETRAINING_ALERTS,
    alert_rules,
    require_program,
)
from training import loop_api

COMPOSE = ALERTMANAGER_CONFIG.parents[2] / "docker-compose.yml"


def amtool(*args: str) -> subprocess.CompletedProcess[str]:
    binary = require_program("amtool", "prometheus-alertmanager")
    return subprocess.run([binary, *args], capture_output=True, text=True, timeout=60)


def receivers_for(*labels: str) -> list[str]:
    result = amtool("config", "routes", "test", f"--config.file={ALERTMANAGER_CONFIG}", *labels)
    # amtool exits 1 when the receivers differ from --verify.receivers; without it, 0.
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout.strip().split(",")


def _config() -> dict:
    return yaml.safe_load(ALERTMANAGER_CONFIG.read_text())


def test_amtool_accepts_the_configuration():
    result = amtool("check-config", str(ALERTMANAGER_CONFIG))

    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_alerts_that_a_model_got_worse_go_to_the_retraining_webhook_and_to_people():
    for alertname in sorted(RETRAINING_ALERTS):
        assert receivers_for(f"alertname={alertname}", "model=churn", "severity=warning") == [
            "mlops-retrain",
            "default",
        ], alertname


def test_other_alerts_and_model_alerts_without_a_model_go_to_people_only():
    assert receivers_for("alertname=MLOpsNoPredictions", "model=churn") == ["default"]
    assert receivers_for("alertname=MLOpsPredictionLatencyHigh", "model=churn") == ["default"]
    assert receivers_for("alertname=MLOpsWorkerDown", "hostname=worker@a") == ["default"]
    assert receivers_for("alertname=MLOpsModelDrifting") == ["default"]


def test_the_retraining_route_names_alerts_the_rules_define_with_a_model_label():
    rules = alert_rules()

    assert set(rules) >= RETRAINING_ALERTS
    for name in RETRAINING_ALERTS:
        assert "{{ $labels.model }}" in rules[name]["annotations"]["summary"], name
    route = _config()["route"]["routes"][0]
    named = route["matchers"][1].split("=~", 1)[1].strip('"').split("|")
    assert set(named) == RETRAINING_ALERTS


def test_the_webhook_is_the_app_s_receiver_with_the_bearer_token_compose_hands_over():
    receiver = {item["name"]: item for item in _config()["receivers"]}["mlops-retrain"]
    webhook = receiver["webhook_configs"][0]
    compose = yaml.safe_load(COMPOSE.read_text())
    alertmanager = compose["services"]["alertmanager"]
    (secret,) = alertmanager["secrets"]

    url = urlsplit(webhook["url"])
    assert (url.scheme, url.netloc) == ("http", "web:8000")
    assert resolve(url.path).func.view_class is loop_api.AlertmanagerView
    authorization = webhook["http_config"]["authorization"]
    assert authorization["type"] == "Bearer"
    assert authorization["credentials_file"] == f"/run/secrets/{secret}"
    assert compose["secrets"][secret] == {"environment": "ALERTMANAGER_WEBHOOK_TOKEN"}
    assert compose["services"]["web"]["environment"]["ALERTMANAGER_WEBHOOK_TOKEN"] == (
        "${ALERTMANAGER_WEBHOOK_TOKEN:-}"
    )
    assert webhook["send_resolved"] is False
