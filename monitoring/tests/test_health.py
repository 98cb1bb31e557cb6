"""Tests of /healthz and /readyz."""

from __future__ import annotations

import socket
from unittest import mock

import pytest
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.utils import OperationalError

from mlops_site.storage import StorageError
from monitoring import services


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def embedded_broker_folders(settings, tmp_path):
    """Point the filesystem broker at a temporary folder; a Redis broker from the environment stays."""
    if settings.CELERY_BROKER_URL == "filesystem://":
        queue = tmp_path / "queue"
        queue.mkdir()
        settings.CELERY_BROKER_TRANSPORT_OPTIONS = {
            **settings.CELERY_BROKER_TRANSPORT_OPTIONS,
            "data_folder_in": str(queue),
            "data_folder_out": str(queue),
        }
    return settings


def test_healthz_answers_ok_without_touching_the_database(client):
    # Without the db fixture, pytest-django makes any query an error.
    response = client.get("/healthz")

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_healthz_refuses_writes(client):
    assert client.post("/healthz").status_code == 405


@pytest.mark.django_db
def test_readyz_reports_every_part_ready(client, embedded_broker_folders):
    response = client.get("/readyz")

    assert response.status_code == 200, response.content
    body = response.json()
    assert body["status"] == "ready"
    assert set(body["checks"]) == {"database", "broker", "storage"}
    assert all(check["status"] == "ok" for check in body["checks"].values())
    assert body["checks"]["storage"]["backend"] in ("FileSystemStorage", "S3Storage")
    assert "Set-Cookie" not in response.headers
    assert "no-cache" in response["Cache-Control"]


@pytest.mark.django_db
def test_readyz_lists_the_latest_worker_heartbeats(client, embedded_broker_folders):
    services.worker_heartbeat_record(hostname="celery@box-1")

    body = client.get("/readyz").json()

    assert [worker["hostname"] for worker in body["workers"]] == ["celery@box-1"]
    assert body["workers"][0]["seconds_ago"] >= 0


@pytest.mark.django_db
def test_readyz_is_ready_even_without_any_worker_heartbeat(client, embedded_broker_folders):
    response = client.get("/readyz")

    assert response.status_code == 200
    assert response.json()["workers"] == []


@pytest.mark.django_db
def test_readyz_names_an_unreachable_broker(client, settings):
    settings.CELERY_BROKER_URL = f"redis://127.0.0.1:{_closed_port()}/0"
    settings.CELERY_BROKER_TRANSPORT_OPTIONS = {}

    response = client.get("/readyz")

    assert response.status_code == 503
    body = response.json()
    assert body["failing"] == ["broker"]
    assert "refused" in body["checks"]["broker"]["error"].lower()


@pytest.mark.django_db
def test_readyz_names_a_missing_embedded_broker_folder(client, settings, tmp_path):
    settings.CELERY_BROKER_URL = "filesystem://"
    missing = tmp_path / "no-such-queue"
    settings.CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(missing),
        "data_folder_out": str(missing),
    }

    response = client.get("/readyz")

    assert response.status_code == 503
    assert response.json()["failing"] == ["broker"]
    assert "no-such-queue" in response.json()["checks"]["broker"]["error"]


@pytest.mark.django_db
def test_readyz_names_failing_storage(client, embedded_broker_folders):
    with mock.patch("mlops_site.storage.check", side_effect=StorageError("bucket unreachable")):
        response = client.get("/readyz")

    assert response.status_code == 503
    body = response.json()
    assert body["failing"] == ["storage"]
    assert "bucket unreachable" in body["checks"]["storage"]["error"]


@pytest.mark.django_db
def test_readyz_names_an_unreachable_database(client, embedded_broker_folders):
    with mock.patch.object(
        BaseDatabaseWrapper, "cursor", side_effect=OperationalError("could not connect to server")
    ):
        response = client.get("/readyz")

    assert response.status_code == 503
    body = response.json()
    assert body["failing"] == ["database"]
    assert "could not connect to server" in body["checks"]["database"]["error"]
    assert body["workers"]["status"] == "unknown"


@pytest.mark.django_db
def test_readyz_names_every_failing_part_at_once(client, settings):
    settings.CELERY_BROKER_URL = f"redis://127.0.0.1:{_closed_port()}/0"
    settings.CELERY_BROKER_TRANSPORT_OPTIONS = {}
    with mock.patch("mlops_site.storage.check", side_effect=StorageError("down")):
        response = client.get("/readyz")

    assert response.status_code == 503
    assert response.json()["failing"] == ["broker", "storage"]


@pytest.mark.django_db
def test_readyz_needs_no_login_even_when_other_pages_do(client, embedded_broker_folders):
    assert client.get("/").status_code == 302
    assert client.get("/readyz").status_code == 200


@pytest.mark.s3
@pytest.mark.django_db
def test_readyz_names_a_missing_s3_bucket(client, settings, embedded_broker_folders):
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {
            **settings.STORAGES["default"],
            "OPTIONS": {**settings.STORAGES["default"]["OPTIONS"], "bucket_name": "no-such-bucket-here"},
        },
    }

    response = client.get("/readyz")

    assert response.status_code == 503
    assert response.json()["failing"] == ["storage"]
    assert "no-such-bucket-here" in response.json()["checks"]["storage"]["error"]


@pytest.mark.redis
@pytest.mark.django_db
def test_readyz_reaches_the_configured_redis_broker(client, settings):
    assert settings.CELERY_BROKER_URL.startswith("redis://")

    body = client.get("/readyz").json()

    assert body["checks"]["broker"] == {"status": "ok", "backend": "redis"}


@pytest.mark.postgres
@pytest.mark.django_db
def test_readyz_reports_the_postgresql_database(client, embedded_broker_folders):
    body = client.get("/readyz").json()

    assert body["checks"]["database"] == {"status": "ok", "backend": "postgresql"}
