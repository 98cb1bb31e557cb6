"""Database tables of the predictions app: one request and the prediction rows it produced."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone


class Channel(models.TextChoices):
    PAGE = "page", "Page"
    API = "api", "API"
    BATCH = "batch", "Batch"


class PredictionRequest(models.Model):
    """One call that produced predictions: who asked, through which channel, which version answered."""

    request_id = models.CharField(max_length=64, db_index=True)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="prediction_requests",
    )
    channel = models.CharField(max_length=8, choices=Channel.choices)
    model_version = models.ForeignKey(
        "models_registry.ModelVersion", on_delete=models.PROTECT, related_name="prediction_requests"
    )
    # The stage the client asked for ("" when it pinned a version).
    stage = models.CharField(max_length=12, blank=True)
    n_rows = models.PositiveIntegerField()
    # Validation and the model call, in milliseconds; storing the rows is not included.
    latency_ms = models.FloatField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["model_version", "-created_at"], name="prediction_request_version")]

    def __str__(self) -> str:
        return f"Request {self.request_id} ({self.n_rows} rows)"


class Prediction(models.Model):
    """One predicted row; user, version and channel are copied from its request so lists need no join."""

    request = models.ForeignKey(PredictionRequest, on_delete=models.CASCADE, related_name="predictions")
    row_index = models.PositiveIntegerField()
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="predictions",
    )
    model_version = models.ForeignKey(
        "models_registry.ModelVersion", on_delete=models.PROTECT, related_name="predictions"
    )
    channel = models.CharField(max_length=8, choices=Channel.choices)
    inputs = models.JSONField()
    prediction = models.JSONField()
    # {class label: probability} for classifiers that give probabilities, else null.
    probabilities = models.JSONField(null=True, blank=True)
    warnings = models.JSONField(default=list, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["request", "row_index"], name="prediction_unique_row"),
        ]
        indexes = [
            models.Index(fields=["user", "-created_at"], name="prediction_user_created"),
            models.Index(fields=["model_version", "-created_at"], name="prediction_version_created"),
            models.Index(fields=["-created_at"], name="prediction_created"),
        ]

    def __str__(self) -> str:
        return f"Prediction {self.pk}"

    @property
    def prediction_text(self) -> str:
        """The prediction for display: regression values to six significant digits."""
        if isinstance(self.prediction, float):
            return f"{self.prediction:.6g}"
        return str(self.prediction)

    @property
    def top_probability(self) -> float | None:
        if not self.probabilities:
            return None
        return max(self.probabilities.values())

    @property
    def probability_items(self) -> list[tuple[str, float]]:
        """(class, probability) pairs, most likely first, for display."""
        return sorted((self.probabilities or {}).items(), key=lambda item: -item[1])
