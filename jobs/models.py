"""The abstract LeasedJob model: the status, lease and timestamps every long job shares."""

from __future__ import annotations

from datetime import timedelta

from django.db import models
from django.utils import timezone


def lease_index(name: str) -> models.Index:
    """The index the claim and the stale-job sweep filter on; subclasses name it in their own Meta."""
    return models.Index(fields=["status", "lease_expires_at"], name=name)


class LeasedJob(models.Model):
    """A job a Celery worker claims by a conditional UPDATE and holds under a lease (see jobs.engine).

    QUEUED → RUNNING → SUCCEEDED or FAILED. The claiming worker holds `lease_expires_at` and renews it
    while working; a job RUNNING with an expired lease was left by a dead worker and may be claimed
    again. `attempts` numbers the claims and fences every write of an attempt.
    """

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"

    TERMINAL = (Status.SUCCEEDED, Status.FAILED)

    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED)
    error_message = models.TextField(blank=True)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        abstract = True
        ordering = ["-created_at", "-id"]
        indexes = [lease_index("%(class)s_lease")]

    @property
    def is_terminal(self) -> bool:
        return self.status in self.TERMINAL

    @property
    def duration(self) -> timedelta | None:
        if self.started_at is None:
            return None
        return (self.finished_at or timezone.now()) - self.started_at
