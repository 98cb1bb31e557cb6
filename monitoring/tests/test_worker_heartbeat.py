"""Tests of the worker heartbeat service and task, including a real Celery worker process."""

from __future__ import annotations

import datetime as dt
import threading
import time

import pytest
from django.conf import settings
from django.db import connection
from django.utils import timezone
from kombu import Connection

from mlops_site.celery import app
from monitoring import services
from monitoring.models import WorkerHeartbeat
from monitoring.tasks import worker_heartbeat_task

#: Seconds a running worker may take to pick up the task and write the row.
HEARTBEAT_TIMEOUT = 60


@pytest.mark.django_db
def test_it_records_one_row_per_worker_and_moves_last_seen_forward():
    first = timezone.now() - dt.timedelta(minutes=5)
    services.worker_heartbeat_record(hostname="celery@a", now=first)
    services.worker_heartbeat_record(hostname="celery@b", now=first)

    later = services.worker_heartbeat_record(hostname="celery@a")

    assert WorkerHeartbeat.objects.count() == 2
    assert later.last_seen > first
    assert WorkerHeartbeat.objects.get(hostname="celery@b").last_seen == first


@pytest.mark.django_db
def test_it_rejects_a_heartbeat_without_hostname():
    with pytest.raises(ValueError, match="hostname"):
        services.worker_heartbeat_record(hostname="")


@pytest.mark.django_db
def test_running_the_task_twice_leaves_one_row():
    worker_heartbeat_task.delay()
    worker_heartbeat_task.delay()

    assert WorkerHeartbeat.objects.count() == 1


def _heartbeat_after(worker, since: dt.datetime | None) -> WorkerHeartbeat:
    """Wait until the worker's row exists with last_seen later than `since`."""
    deadline = time.monotonic() + HEARTBEAT_TIMEOUT
    while time.monotonic() < deadline:
        row = WorkerHeartbeat.objects.filter(hostname=worker.nodename).first()
        if row is not None and (since is None or row.last_seen > since):
            return row
        if worker.process.poll() is not None:
            pytest.fail(f"the worker died:\n{worker.log()[-3000:]}")
        time.sleep(0.2)
    pytest.fail(f"no heartbeat from {worker.nodename} in {HEARTBEAT_TIMEOUT}s:\n{worker.log()[-3000:]}")


def _send_heartbeat_through(worker) -> None:
    app.conf.task_always_eager = False
    with Connection(worker.broker_url, transport_options=worker.transport_options) as conn:
        worker_heartbeat_task.apply_async(connection=conn)


@pytest.mark.worker
def test_a_real_worker_on_the_embedded_broker_records_its_heartbeat(start_celery_worker):
    worker = start_celery_worker("filesystem://")
    on_start = _heartbeat_after(worker, None)

    _send_heartbeat_through(worker)

    from_task = _heartbeat_after(worker, on_start.last_seen)
    assert from_task.pk == on_start.pk


@pytest.mark.worker
@pytest.mark.redis
def test_a_real_worker_on_redis_records_its_heartbeat(start_celery_worker):
    worker = start_celery_worker(settings.REDIS_URL)
    on_start = _heartbeat_after(worker, None)

    _send_heartbeat_through(worker)
    _send_heartbeat_through(worker)

    _heartbeat_after(worker, on_start.last_seen)
    assert WorkerHeartbeat.objects.filter(hostname=worker.nodename).count() == 1


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_heartbeats_of_one_worker_on_postgresql_keep_one_row():
    errors: list[BaseException] = []
    start = threading.Barrier(6)

    def beat() -> None:
        try:
            start.wait()
            services.worker_heartbeat_record(hostname="celery@busy")
        except BaseException as exc:  # collected for the assertion below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=beat) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert errors == []
    assert WorkerHeartbeat.objects.filter(hostname="celery@busy").count() == 1
