"""Database tables of the feedback app: true outcomes of predictions, their history, and the rollups of
live quality kept beside them."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone

from jobs.models import ChunkedFileJob, lease_index


class Source(models.TextChoices):
    PAGE = "page", "Page"
    API = "api", "API"
    FILE = "file", "File"


class Feedback(models.Model):
    """The true outcome of one prediction, as last given; earlier outcomes are in FeedbackChange.

    The prediction's version, time and predicted value are copied here (a prediction never changes), so
    live figures and the rollup rebuild read this table alone. Classification: `true_label` is one of the
    version's classes, or "" when someone said "wrong" without naming the right class of a multi-class
    model. Regression: `true_value` is the observed number.
    """

    # Unique but without a database constraint, like the version below: checking the key of every outcome
    # at commit was a tenth of a file import's time. Django still deletes an outcome with its prediction.
    prediction = models.OneToOneField(
        "predictions.Prediction", on_delete=models.CASCADE, related_name="feedback", db_constraint=False
    )
    # Without a database constraint or an index of its own (the composite index below leads with it): each
    # costs every stored outcome a check or an index entry, and a file import stores 20,000 per chunk.
    # Django still protects a version with outcomes from deletion, and nulls labelled_by when its user
    # is deleted.
    model_version = models.ForeignKey(
        "models_registry.ModelVersion",
        on_delete=models.PROTECT,
        related_name="feedback",
        db_constraint=False,
        db_index=False,
    )
    prediction_created_at = models.DateTimeField()
    predicted_label = models.CharField(max_length=255, blank=True)
    predicted_value = models.FloatField(null=True, blank=True)
    # Right or wrong: classification always; regression only when someone said so (else null).
    correct = models.BooleanField(null=True, blank=True)
    true_label = models.CharField(max_length=255, blank=True)
    true_value = models.FloatField(null=True, blank=True)
    comment = models.CharField(max_length=1000, blank=True)
    source = models.CharField(max_length=8, choices=Source.choices)
    labelled_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        db_constraint=False,
        # Read only when a user is deleted (to null it): an index would cost every outcome an entry.
        db_index=False,
    )
    # When the first outcome arrived (label delay is measured to it) and when the current one did.
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-prediction_created_at", "-id"]
        indexes = [
            models.Index(fields=["model_version", "-prediction_created_at"], name="feedback_version_recent"),
        ]

    def __str__(self) -> str:
        return f"Feedback on prediction {self.prediction_id}"

    @property
    def outcome_text(self) -> str:
        if self.true_value is not None:
            return f"{self.true_value:.6g}"
        return self.true_label or "unknown (wrong)"


class FeedbackChange(models.Model):
    """An outcome replaced by a different one: who gave each, when, from where, and both values."""

    feedback = models.ForeignKey(Feedback, on_delete=models.CASCADE, related_name="changes")
    # {"correct", "true_label", "true_value", "source", "labelled_by", "at"} before and after.
    old = models.JSONField()
    new = models.JSONField()
    changed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        db_constraint=False,
        db_index=False,
    )
    source = models.CharField(max_length=8, choices=Source.choices)
    changed_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-changed_at", "-id"]

    def __str__(self) -> str:
        return f"Change of feedback {self.feedback_id}"


class QualityHourly(models.Model):
    """Labelled predictions per version, hour of prediction, predicted class and true class.

    Classification rows count each (predicted, true) cell: a confusion matrix per hour. Regression rows
    have "" for both and carry the sums of absolute and squared errors. Kept in the transaction that writes
    the feedback, so live figures sum a few rows and never scan predictions; `manage.py quality_reconcile`
    rebuilds them from Feedback and reports any difference.
    """

    model_version = models.ForeignKey(
        "models_registry.ModelVersion", on_delete=models.CASCADE, related_name="quality_hours"
    )
    hour = models.DateTimeField()
    predicted = models.CharField(max_length=255, blank=True)
    actual = models.CharField(max_length=255, blank=True)
    n = models.BigIntegerField(default=0)
    sum_abs_error = models.FloatField(default=0.0)
    sum_sq_error = models.FloatField(default=0.0)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["model_version", "hour", "predicted", "actual"], name="quality_hourly_unique"
            )
        ]

    def __str__(self) -> str:
        return f"{self.model_version_id} @ {self.hour:%Y-%m-%d %H} {self.predicted}->{self.actual}: {self.n}"


class DelayHourly(models.Model):
    """First outcomes per version, hour of prediction and label-delay bin (feedback.quality.DELAY_EDGES)."""

    model_version = models.ForeignKey(
        "models_registry.ModelVersion", on_delete=models.CASCADE, related_name="delay_hours"
    )
    hour = models.DateTimeField()
    bin = models.PositiveSmallIntegerField()
    n = models.BigIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["model_version", "hour", "bin"], name="delay_hourly_unique")
        ]

    def __str__(self) -> str:
        return f"{self.model_version_id} @ {self.hour:%Y-%m-%d %H} bin {self.bin}: {self.n}"


class FeedbackImport(ChunkedFileJob):
    """A staff upload of true outcomes (a CSV of prediction ids or keys with labels), stored in chunks by
    a worker on the leased-job engine (see ChunkedFileJob); invalid rows are listed by row in the errors
    file and never stored."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # Keys are unique per registered model, so a file of keys names its model; a file of ids may not.
    registered_model = models.ForeignKey(
        "models_registry.RegisteredModel",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="feedback_imports",
    )
    # Of the stored rows: new outcomes, changed ones, and ones that repeated what was already there.
    rows_created = models.PositiveBigIntegerField(default=0)
    rows_updated = models.PositiveBigIntegerField(default=0)
    rows_unchanged = models.PositiveBigIntegerField(default=0)

    class Meta(ChunkedFileJob.Meta):
        indexes = [
            models.Index(fields=["user", "-created_at"], name="feedback_import_user_created"),
            lease_index("feedback_import_status"),
        ]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(rows_failed__lte=models.F("rows_done")),
                name="feedback_import_failed_le_done",
            ),
        ]

    def __str__(self) -> str:
        return f"Feedback import {self.uuid} ({self.original_filename or 'upload'})"
