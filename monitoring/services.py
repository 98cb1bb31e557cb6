"""Writes of the monitoring app."""

from __future__ import annotations

import datetime as dt

from django.utils import timezone

from monitoring.models import WorkerHeartbeat


def worker_heartbeat_record(*, hostname: str, now: dt.datetime | None = None) -> WorkerHeartbeat:
    """Upsert on the hostname, so a repeated or redelivered heartbeat only moves last_seen forward."""
    if not hostname:
        raise ValueError("a worker heartbeat needs the worker's hostname")
    heartbeat, _ = WorkerHeartbeat.objects.update_or_create(
        hostname=hostname[:255], defaults={"last_seen": now or timezone.now()}
    )
    return heartbeat
