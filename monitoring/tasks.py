"""Celery tasks of the monitoring app; each only calls a service."""

from __future__ import annotations

import socket
from typing import Any

from celery import Task, shared_task
from celery.signals import worker_ready

from monitoring import drift_services, services


@shared_task(name="monitoring.tasks.worker_heartbeat_task", bind=True, ignore_result=True)
def worker_heartbeat_task(self: Task) -> None:
    # Eagerly run tasks have no worker name; the host name is the closest thing.
    hostname = self.request.hostname or socket.gethostname()
    services.worker_heartbeat_record(hostname=hostname)


@worker_ready.connect
def worker_heartbeat_on_ready(sender: Any = None, **kwargs: Any) -> None:
    # Beat's first heartbeat comes a minute after start; /readyz should list a new worker at once.
    # Called directly, not queued: a queued task could be picked up by another worker and name it instead.
    services.worker_heartbeat_record(hostname=sender.hostname)


@shared_task(name="monitoring.tasks.drift_reports_compute_task", ignore_result=True)
def drift_reports_compute_task() -> None:
    # Reports are keyed by version and window end: a repeated or late run rewrites the same reports.
    drift_services.drift_reports_compute()
