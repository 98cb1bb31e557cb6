"""A real Prometheus (Debian's package) scrapes a running app with the metrics token, and the metrics the
dashboards and alert rules query come back from its HTTP API."""

from __future__ import annotations

import contextlib
import http.client
import json
import subprocess
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from rest_framework.authtoken.models import Token

from monitoring.tests.observability import require_program
from predictions.tests.helpers import make_model_version, trained_model
from tests.factories import make_user
from tests.live_gunicorn import free_port, gunicorn_serving, process_group_stop

METRICS_TOKEN = "prometheus-scrape-test-token"
START_TIMEOUT = 30
SCRAPE_TIMEOUT = 45


@contextlib.contextmanager
def prometheus_scraping(*, app_port: int, folder: Path) -> Iterator[int]:
    """Prometheus on a free loopback port scraping the app every second; yields its port."""
    binary = require_program("prometheus", "prometheus")
    token_file = folder / "metrics-token"
    token_file.write_text(METRICS_TOKEN + "\n")
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [
            {
                "job_name": "mlops-web",
                "metrics_path": "/metrics",
                "authorization": {"type": "Bearer", "credentials_file": str(token_file)},
                "static_configs": [{"targets": [f"127.0.0.1:{app_port}"]}],
            }
        ],
    }
    (folder / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    log_path = folder / "prometheus.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                binary, f"--config.file={folder / 'prometheus.yml'}",
                f"--storage.tsdb.path={folder / 'data'}", f"--web.listen-address=127.0.0.1:{port}",
                "--log.level=warn",
            ],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        _wait_until(
            lambda: _get(port, "/-/ready") is not None, START_TIMEOUT, "Prometheus to start", log_path
        )
        yield port
    finally:
        process_group_stop(process)


def _get(port: int, path: str) -> bytes | None:
    """The body of a 200 answer, or None while Prometheus is not up (or not ready)."""
    try:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        connection.request("GET", path)
        response = connection.getresponse()
        body = response.read()
    except OSError:
        return None
    return body if response.status == 200 else None


def _wait_until(ready: Any, timeout: float, what: str, log_path: Path) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}:\n{log_path.read_text(errors='replace')[-3000:]}")
        time.sleep(0.5)


def query(port: int, promql: str) -> list[dict[str, Any]]:
    body = _get(port, "/api/v1/query?" + urllib.parse.urlencode({"query": promql}))
    if body is None:
        return []
    answer = json.loads(body)
    assert answer["status"] == "success", answer
    return answer["data"]["result"]


def predict_once(port: int, token: str, row: dict[str, Any]) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    connection.request(
        "POST",
        "/api/models/cancer/predict/",
        body=json.dumps({"inputs": row}),
        headers={"Content-Type": "application/json", "Authorization": f"Token {token}"},
    )
    response = connection.getresponse()
    body = response.read()
    assert response.status == 200, body[:500]


@pytest.mark.worker
def test_prometheus_scrapes_the_app_with_the_token_and_answers_the_dashboards_queries(
    transactional_db, tmp_path
):
    require_program("prometheus", "prometheus")
    cancer = trained_model("cancer")
    make_model_version(trained=cancer, name="cancer", version=1)
    token = Token.objects.create(user=make_user("scraper-user")).key
    metrics_dir = tmp_path / "prometheus-multiproc"
    metrics_dir.mkdir()
    environment = {"METRICS_TOKEN": METRICS_TOKEN, "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}

    with gunicorn_serving(data_dir=tmp_path, env=environment) as app_port:
        predict_once(app_port, token, cancer.sample_rows[0])
        with prometheus_scraping(app_port=app_port, folder=tmp_path) as prometheus:
            log_path = tmp_path / "prometheus.log"
            _wait_until(
                lambda: query(prometheus, 'sum(mlops_predictions_total{model="cancer"})'),
                SCRAPE_TIMEOUT,
                "mlops_predictions_total in Prometheus",
                log_path,
            )
            up = query(prometheus, 'up{job="mlops-web"}')
            predictions = query(prometheus, 'sum by (model) (mlops_predictions_total{model="cancer"})')
            latency = query(
                prometheus,
                'sum by (phase) (mlops_prediction_latency_seconds_count{model="cancer"})',
            )
            answers = query(
                prometheus,
                'sum(django_http_responses_total_by_status_view_method_total{status="200"})',
            )

    assert [sample["value"][1] for sample in up] == ["1"]
    assert [sample["value"][1] for sample in predictions] == ["1"]
    assert {sample["metric"]["phase"] for sample in latency} >= {"validation", "model", "total"}
    assert float(answers[0]["value"][1]) >= 1
