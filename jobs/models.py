"""The abstract LeasedJob model: the status, lease and timestamps every long job shares."""

from __future__ import annotations

import uuid
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


class ChunkedFileJob(LeasedJob):
    """A leased job that works through an uploaded CSV file in chunks (see jobs.chunked).

    `chunks_done` is the checkpoint: it advances, with rows_done and rows_failed, in the transaction that
    stores the chunk's rows, so a retry resumes after the last committed chunk. `chunk_rows` is fixed at
    submission, so a retry cuts the file into the same chunks as the attempt before it.
    """

    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    input_key = models.CharField(max_length=255)
    original_filename = models.CharField(max_length=255, blank=True)
    input_size_bytes = models.PositiveBigIntegerField(default=0)
    errors_key = models.CharField(max_length=255, blank=True)
    chunk_rows = models.PositiveIntegerField()
    chunks_done = models.PositiveIntegerField(default=0)
    # Estimated from the line count at submission (at least the real count); exact once succeeded.
    rows_total = models.PositiveBigIntegerField(default=0)
    rows_done = models.PositiveBigIntegerField(default=0)
    rows_failed = models.PositiveBigIntegerField(default=0)
    # Seconds spent per step, summed over the chunks and attempts.
    timings = models.JSONField(default=dict, blank=True)

    class Meta(LeasedJob.Meta):
        abstract = True

    @property
    def progress(self) -> int:
        """Percent of rows done: 100 only once succeeded, since rows_total is an estimate until then."""
        if self.status == self.Status.SUCCEEDED:
            return 100
        if not self.rows_total:
            return 0
        return min(99, self.rows_done * 100 // self.rows_total)
