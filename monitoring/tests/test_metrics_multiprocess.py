"""The service run's proof that counters add up: two gunicorn workers and a Celery worker, one metrics folder.

Before multiprocess mode each web worker answered /metrics with its own counts (410, 398, 411… for one
counter); now every scrape, whichever worker answers it, must show every process's total.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
import requests
from django.conf import settings
from prometheus_client.mmap_dict import MmapedDict
from prometheus_client.parser import text_string_to_metric_families
from rest_framework.authtoken.models import Token

from predictions.models import BatchPredictionJob
from predictions.tests.batch_helpers import cancer_rows, csv_bytes
from predictions.tests.helpers import make_model_version, trained_model
from tests.celery_worker import database_url_for_other_processes, storage_env_for_other_processes
from tests.live_gunicorn import GUNICORN_CONFIG, START_TIMEOUT, free_port, process_group_stop

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.worker]

TOKEN = "metrics-token-for-the-service-run-0123456789"
#: Single-row API predictions, sent from several threads on fresh connections so both workers answer.
API_PREDICTIONS = 40
BATCH_ROWS = 25
JOB_TIMEOUT = 120
SCRAPES = 6


def _broker_url_of_its_own(redis_url: str, db: int = 13) -> str:
    """The service run's Redis, another database number: no other test's messages reach this worker."""
    parts = urlsplit(redis_url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{db}", parts.query, parts.fragment))


@contextlib.contextmanager
def gunicorn(*, data_dir: Path, env: dict[str, str], workers: int) -> Iterator[int]:
    """The project's gunicorn (its config, hooks included) with `workers` workers; yields the port."""
    port = free_port()
    environment = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "mlops_site.settings",
        "DATABASE_URL": database_url_for_other_processes(),
        "DATA_DIR": str(data_dir),
        "PYTHONPATH": str(settings.BASE_DIR),
        **storage_env_for_other_processes(),
        **env,
    }
    data_dir.mkdir(parents=True, exist_ok=True)
    log_path = data_dir / "gunicorn.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                sys.executable, "-m", "gunicorn", "-c", str(GUNICORN_CONFIG),
                "--workers", str(workers), "--bind", f"127.0.0.1:{port}", "--log-level", "warning",
            ],
            env=environment, cwd=settings.BASE_DIR, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                requests.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
                break
            except requests.RequestException:  # refused, or slow while the workers import the project
                if process.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"gunicorn did not start:\n{log_path.read_text(errors='replace')[-3000:]}")
                time.sleep(0.2)
        yield port
    finally:
        process_group_stop(process)


def _predict(port: int, api_token: str, row: dict) -> None:
    # A connection per request: gunicorn hands each new connection to whichever worker accepts it first.
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request(
            "POST",
            "/api/models/cancer/predict/",
            body=json.dumps({"inputs": row}),
            headers={"Authorization": f"Token {api_token}", "Content-Type": "application/json"},
        )
        response = connection.getresponse()
        body = response.read()
        assert response.status == 200, body[:500]
    finally:
        connection.close()


def _scrape(port: int) -> dict[tuple[str, frozenset], float]:
    response = requests.get(
        f"http://127.0.0.1:{port}/metrics", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30
    )
    assert response.status_code == 200, response.text[:500]
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def _writers(folder: Path, metric: str) -> set[int]:
    """The pids whose metric file holds a non-zero sample named `metric`."""
    pids = set()
    for path in folder.glob("counter_*.db"):
        for key, value, _timestamp, _pos in MmapedDict.read_all_values_from_file(str(path)):
            if json.loads(key)[1] == metric and value:
                pids.add(int(path.stem.rsplit("_", 1)[1]))
    return pids


def test_every_scrape_adds_up_two_web_workers_and_a_celery_worker(start_celery_worker, alice, tmp_path):
    data_dir = tmp_path / "worker-data"
    if not settings.AWS_STORAGE_BUCKET_NAME:
        # Without S3 the web and the worker read model files from the media folder under their DATA_DIR.
        media = data_dir / "media"
        settings.STORAGES = {
            **settings.STORAGES,
            "default": {**settings.STORAGES["default"], "OPTIONS": {"location": str(media)}},
        }
        settings.MEDIA_ROOT = media
    make_model_version(trained=trained_model("cancer"), name="cancer")
    api_token = Token.objects.create(user=alice).key
    metrics_dir = tmp_path / "metrics"
    broker = _broker_url_of_its_own(settings.REDIS_URL)
    env = {"PROMETHEUS_MULTIPROC_DIR": str(metrics_dir), "METRICS_TOKEN": TOKEN, "CELERY_BROKER_URL": broker}
    worker = start_celery_worker(broker, pool="prefork", concurrency=1, extra_env=env)
    rows = trained_model("cancer").sample_rows

    with gunicorn(data_dir=data_dir, env=env, workers=2) as port:
        threads = [
            threading.Thread(
                target=lambda offset=offset: [
                    _predict(port, api_token, rows[i % len(rows)]) for i in range(offset, API_PREDICTIONS, 4)
                ]
            )
            for offset in range(4)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        batch = requests.post(
            f"http://127.0.0.1:{port}/api/models/cancer/batch/",
            headers={"Authorization": f"Token {api_token}"},
            files={"file": ("rows.csv", csv_bytes(cancer_rows(BATCH_ROWS)), "text/csv")},
            timeout=60,
        )
        assert batch.status_code in (201, 202), batch.text[:500]
        job = BatchPredictionJob.objects.get()
        deadline = time.monotonic() + JOB_TIMEOUT
        while not job.is_terminal:
            if time.monotonic() > deadline or worker.process.poll() is not None:
                pytest.fail(f"the batch job did not finish ({job.status}):\n{worker.log()[-3000:]}")
            time.sleep(0.2)
            job.refresh_from_db()
        assert job.status == "succeeded", job.error_message
        # The worker counts right after it commits a chunk; the job row is final with the last commit.
        time.sleep(0.5)

        scrapes = [_scrape(port) for _ in range(SCRAPES)]

    def predicted(scrape: dict, channel: str) -> float:
        return scrape.get(
            (
                "mlops_predictions_total",
                frozenset({"model": "cancer", "version": "1", "channel": channel}.items()),
            ),
            0.0,
        )

    assert [predicted(s, "api") for s in scrapes] == [API_PREDICTIONS] * SCRAPES
    assert [predicted(s, "batch") for s in scrapes] == [BATCH_ROWS] * SCRAPES
    batch_rows = ("mlops_batch_rows_total", frozenset({"model": "cancer", "outcome": "predicted"}.items()))
    assert [s[batch_rows] for s in scrapes] == [BATCH_ROWS] * SCRAPES
    # django-prometheus's own counters add up too: each scrape sees the earlier ones, whoever answered.
    view_requests = "django_http_requests_total_by_view_transport_method_total"
    requests_by_view = [
        sum(
            v
            for (name, labels), v in s.items()
            if name == view_requests and ("view", "monitoring:metrics") in labels
        )
        for s in scrapes
    ]
    first = int(requests_by_view[0])
    assert requests_by_view == list(range(first, first + SCRAPES))
    # The rows were counted by both web workers and by the worker's pool process.
    writers = _writers(metrics_dir, "mlops_predictions_total")
    assert len(writers) >= 3, f"counted by {writers} only"
