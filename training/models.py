"""Training runs: one request to train a model, executed on a worker."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models

from jobs.models import LeasedJob, lease_index
from models_registry.models import Task


class TrainingRun(LeasedJob):
    """One request to train a model, executed by a Celery task on the leased-job engine (jobs.engine).

    A worker renews the lease from a heartbeat thread and at every step. `key` names the run in MLflow
    (run_key).
    """

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
    progress = models.PositiveSmallIntegerField(default=0)
    progress_message = models.CharField(max_length=255, blank=True)
    mlflow_run_id = models.CharField(max_length=64, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="training_runs",
    )

    class Meta(LeasedJob.Meta):
        constraints = [
            models.CheckConstraint(condition=models.Q(progress__lte=100), name="training_run_progress_max"),
            models.CheckConstraint(
                condition=models.Q(test_size__gt=0, test_size__lt=1), name="training_run_test_size_range"
            ),
        ]
        indexes = [lease_index("training_run_status")]

    def __str__(self) -> str:
        return f"Training run {self.pk} ({self.registered_model.name}, {self.algorithm})"
