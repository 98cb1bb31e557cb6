"""Database tables of the monitoring app."""

from __future__ import annotations

from django.db import models


class WorkerHeartbeat(models.Model):
    """The last time each Celery worker ran the heartbeat task; one row per worker hostname."""

    hostname = models.CharField(max_length=255, unique=True)
    last_seen = models.DateTimeField()

    class Meta:
        ordering = ["-last_seen"]

    def __str__(self) -> str:
        return f"{self.hostname} at {self.last_seen:%Y-%m-%d %H:%M:%S}"


class FeatureHourly(models.Model):
    """Rows a version predicted in one hour, per input feature (or output) and reference bin.

    One row per bin rather than a JSON list of counts, so writers add to it with one INSERT … ON CONFLICT
    (mlops_site.rollups.counters_add) and never read it back. Bins are those of the version's reference
    profile (ml.drift): `bin` is MISSING_BIN (-1) for missing values. `value_sum` is the sum of the
    numeric values in the bin, which places the bin's mass for the Wasserstein distance.
    """

    class Source(models.TextChoices):
        INPUT = "input", "Input feature"
        PREDICTION = "prediction", "Prediction"
        CONFIDENCE = "confidence", "Confidence"

    model_version = models.ForeignKey(
        "models_registry.ModelVersion", on_delete=models.CASCADE, related_name="+", db_index=False
    )
    hour = models.DateTimeField()
    source = models.CharField(max_length=10, choices=Source.choices)
    # The input column's name; "" for the prediction and the confidence.
    feature = models.CharField(max_length=255, blank=True)
    bin = models.SmallIntegerField()
    n = models.BigIntegerField(default=0)
    value_sum = models.FloatField(default=0.0)

    class Meta:
        constraints = [
            # Also the index of every read: a version's hours in a window.
            models.UniqueConstraint(
                fields=["model_version", "hour", "source", "feature", "bin"], name="feature_hourly_key"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.source} {self.feature} bin {self.bin} at {self.hour:%Y-%m-%d %H}: {self.n}"


class DriftReport(models.Model):
    """One drift check of a version over the window of hours ending at `window_end` (exclusive).

    Unique per (version, window end): the hourly job writes the same report again when run twice.
    `features` holds each feature's result (ml.drift.column_drift): test, statistic, p-value or distance,
    threshold, drifted, PSI and missing shares.
    """

    model_version = models.ForeignKey(
        "models_registry.ModelVersion", on_delete=models.CASCADE, related_name="drift_reports", db_index=False
    )
    window_end = models.DateTimeField()
    window_hours = models.PositiveSmallIntegerField()
    computed_at = models.DateTimeField()
    rows = models.PositiveBigIntegerField(default=0)
    features = models.JSONField(default=list)
    features_tested = models.PositiveIntegerField(default=0)
    features_drifted = models.PositiveIntegerField(default=0)
    share_drifted = models.FloatField(default=0.0)
    drifting = models.BooleanField(default=False)
    prediction = models.JSONField(null=True, blank=True)
    estimated_metric = models.CharField(max_length=20, blank=True)
    estimated_score = models.FloatField(null=True, blank=True)
    estimated_stderr = models.FloatField(null=True, blank=True)
    estimated_rows = models.PositiveBigIntegerField(default=0)

    class Meta:
        ordering = ["-window_end"]
        constraints = [
            models.UniqueConstraint(fields=["model_version", "window_end"], name="drift_report_window"),
        ]

    def __str__(self) -> str:
        state = "drifting" if self.drifting else "stable"
        return f"drift of version {self.model_version_id} to {self.window_end:%Y-%m-%d %H:%M}: {state}"

    @property
    def prediction_drifted(self) -> bool:
        return bool(self.prediction and self.prediction.get("drifted"))
