"""Celery tasks of the monitoring app; each only calls a service."""

from __future__ import annotations

import socket

from celery import Task, shared_task

from monitoring import services


@shared_task(bind=True, ignore_result=True)
def worker_heartbeat_task(self: Task) -> None:
    # Eagerly run tasks have no worker name; the host name is the closest thing.
    hostname = self.request.hostname or socket.gethostname()
    services.worker_heartbeat_record(hostname=hostname)
