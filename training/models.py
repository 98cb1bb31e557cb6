"""Training runs: one request to train a model, executed on a worker."""

from __future__ import annotations

import uuid
from datetime import timedelta

from django.conf import settings
from django.db import models
from django.utils import timezone

from models_registry.models import Task


class TrainingRun(models.Model):
    """One request to train a model, executed by a Celery task.

    QUEUED → RUNNING → SUCCEEDED or FAILED. A worker claims the run by a conditional UPDATE and holds
    a lease (`lease_expires_at`) that it renews while working; a run RUNNING with an expired lease was
    left by a crashed worker and may be claimed again. `key` names the run in MLflow (run_key).
    """

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"

    TERMINAL = (Status.SUCCEEDED, Status.FAILED)

    key = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    dataset_version = models.ForeignKey(
        "datasets.DatasetVersion", on_delete=models.PROTECT, related_name="training_runs"
    )
    registered_model = models.ForeignKey(
        "models_registry.RegisteredModel", on_delete=models.PROTECT, related_name="training_runs"
    )
    target_column = models.CharField(max_length=255)
    # Blank: inferred from the target when the run executes.
    task = models.CharField(max_length=20, choices=Task.choices, blank=True)
    algorithm = models.CharField(max_length=64)
    params = models.JSONField(default=dict, blank=True)
    seed = models.PositiveBigIntegerField(default=42)
    test_size = models.FloatField(default=0.2)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED)
    progress = models.PositiveSmallIntegerField(default=0)
    progress_message = models.CharField(max_length=255, blank=True)
    error_message = models.TextField(blank=True)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    mlflow_run_id = models.CharField(max_length=64, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="training_runs",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.CheckConstraint(condition=models.Q(progress__lte=100), name="training_run_progress_max"),
            models.CheckConstraint(
                condition=models.Q(test_size__gt=0, test_size__lt=1), name="training_run_test_size_range"
            ),
        ]
        indexes = [models.Index(fields=["status", "lease_expires_at"], name="training_run_status")]

    def __str__(self) -> str:
        return f"Training run {self.pk} ({self.registered_model.name}, {self.algorithm})"

    @property
    def is_terminal(self) -> bool:
        return self.status in self.TERMINAL

    @property
    def duration(self) -> timedelta | None:
        if self.started_at is None:
            return None
        return (self.finished_at or timezone.now()) - self.started_at
