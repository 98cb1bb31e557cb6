"""Database tables of the predictions app: requests, the prediction rows they produced, and batch jobs."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone

from jobs.models import ChunkedFileJob, LeasedJob, lease_index


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
    # Indexed by prediction_request_version, which leads with it: a second index would only slow inserts.
    model_version = models.ForeignKey(
        "models_registry.ModelVersion",
        on_delete=models.PROTECT,
        related_name="prediction_requests",
        db_index=False,
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

    # request, user and model_version have no index of their own: each leads a composite index below
    # (prediction_unique_row, prediction_user_keyset, prediction_version_created), which serves the same
    # lookups and deletes. Nor a database constraint, like batch_job: PostgreSQL checks each for every
    # inserted row, most of the cost of storing a batch (migration 0007). Django performs their on_delete
    # itself, and only the storing code writes these rows, with the rows they point to.
    request = models.ForeignKey(
        PredictionRequest,
        on_delete=models.CASCADE,
        related_name="predictions",
        db_index=False,
        db_constraint=False,
    )
    row_index = models.PositiveIntegerField()
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="predictions",
        db_index=False,
        db_constraint=False,
    )
    model_version = models.ForeignKey(
        "models_registry.ModelVersion",
        on_delete=models.PROTECT,
        related_name="predictions",
        db_index=False,
        db_constraint=False,
    )
    channel = models.CharField(max_length=8, choices=Channel.choices)
    # Batch rows: the job that predicted them; row_index is then the data row's number in the job's input
    # file minus one (the files show `row`, from 1). Indexed by the unique constraint below. Without a
    # database constraint, as above (Django still cascades deletes of a job to its predictions).
    batch_job = models.ForeignKey(
        "BatchPredictionJob",
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="predictions",
        db_index=False,
        db_constraint=False,
    )
    # Batch rows store {} here: their inputs stay in the job's input file (batch_job.input_key, row), which
    # the result file repeats next to each prediction. Encoding 30 features per row as JSON made storing a
    # batch 60% slower and the table several times larger.
    inputs = models.JSONField()
    prediction = models.JSONField()
    # {class label: probability} for classifiers that give probabilities, else null.
    probabilities = models.JSONField(null=True, blank=True)
    warnings = models.JSONField(default=list, blank=True)
    # The highest class probability, so the label queue can list the least confident rows first from an
    # index; null for regression and for classifiers without probabilities.
    confidence = models.FloatField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["request", "row_index"], name="prediction_unique_row"),
            # A retried chunk can never store a row of the file twice.
            models.UniqueConstraint(
                fields=["batch_job", "row_index"],
                condition=models.Q(batch_job__isnull=False),
                name="prediction_unique_batch_row",
            ),
        ]
        indexes = [
            # The history's keyset order (created_at, id), led by its filters (migration 0004).
            models.Index(fields=["user", "-created_at", "-id"], name="prediction_user_keyset"),
            models.Index(
                fields=["user", "channel", "-created_at", "-id"], name="prediction_user_channel_keyset"
            ),
            models.Index(fields=["model_version", "-created_at"], name="prediction_version_created"),
            models.Index(fields=["-created_at", "-id"], name="prediction_keyset"),
            models.Index(fields=["model_version", "confidence"], name="prediction_version_confidence"),
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


class PredictionKey(models.Model):
    """A client's own key for a predicted row (an order id, a ticket number), unique per registered model.

    Feedback can then name the row by the key the client already has instead of our id. A table of its
    own, so rows predicted without a key cost nothing.
    """

    registered_model = models.ForeignKey(
        "models_registry.RegisteredModel", on_delete=models.CASCADE, related_name="prediction_keys"
    )
    key = models.CharField(max_length=128)
    prediction = models.OneToOneField(Prediction, on_delete=models.CASCADE, related_name="key")

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["registered_model", "key"], name="prediction_key_unique_per_model"
            )
        ]

    def __str__(self) -> str:
        return self.key


class PredictionHourly(models.Model):
    """Rows predicted per model version and hour, kept in the transaction that stores them.

    Feedback coverage (labelled / predicted) and volume charts read these instead of counting
    predictions, so a figure costs the same at a thousand rows as at a hundred million.
    """

    model_version = models.ForeignKey(
        "models_registry.ModelVersion", on_delete=models.CASCADE, related_name="prediction_hours"
    )
    hour = models.DateTimeField()
    n = models.PositiveBigIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["model_version", "hour"], name="prediction_hourly_unique")
        ]

    def __str__(self) -> str:
        return f"{self.model_version_id} @ {self.hour:%Y-%m-%d %H}: {self.n}"


class LatencyHourly(models.Model):
    """Requests answered per model version, hour and latency bin (mlops_site.latency_bins.EDGES_MS).

    The latency is the request's `latency_ms` (validation and the model call); batch jobs are not counted,
    as their time is a whole file's. The monitoring page reads percentiles from these counts.
    """

    model_version = models.ForeignKey(
        "models_registry.ModelVersion", on_delete=models.CASCADE, related_name="latency_hours"
    )
    hour = models.DateTimeField()
    bin = models.PositiveSmallIntegerField()
    n = models.PositiveBigIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["model_version", "hour", "bin"], name="latency_hourly_unique")
        ]

    def __str__(self) -> str:
        return f"{self.model_version_id} @ {self.hour:%Y-%m-%d %H} bin {self.bin}: {self.n}"


class BatchPredictionJob(ChunkedFileJob):
    """A CSV file predicted in chunks by a Celery worker on the leased-job engine (see ChunkedFileJob)."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="batch_prediction_jobs",
    )
    registered_model = models.ForeignKey(
        "models_registry.RegisteredModel", on_delete=models.PROTECT, related_name="batch_prediction_jobs"
    )
    # Resolved at submission (pinned, or the version then in `stage`): a promotion while the job waits or
    # runs does not mix two versions in one result.
    model_version = models.ForeignKey(
        "models_registry.ModelVersion", on_delete=models.PROTECT, related_name="batch_prediction_jobs"
    )
    # The stage the client asked for ("" when it pinned a version).
    stage = models.CharField(max_length=12, blank=True)
    # The PredictionRequest every row of this job belongs to (channel batch).
    prediction_request = models.OneToOneField(
        PredictionRequest, on_delete=models.PROTECT, related_name="batch_job"
    )
    result_key = models.CharField(max_length=255, blank=True)
    # The chunks the file was cut into (BatchPredictionChunk rows), set once the whole file is cut; until
    # then None. `chunks_done` counts the chunks stored so far, in any order.
    chunks_total = models.PositiveIntegerField(null=True, blank=True)
    # Every chunk left is queued or held by another worker: the job's attempt handed its claim back and
    # the worker that stores the last chunk finishes the job.
    waiting_for_chunks = models.BooleanField(default=False)
    # False: the result file is the only record of the rows (no Prediction rows, so no feedback, history
    # or label queue for them); the counts, volumes and drift bins still take them in.
    store_predictions = models.BooleanField(default=True)

    class Meta(ChunkedFileJob.Meta):
        indexes = [
            models.Index(fields=["user", "-created_at"], name="batch_job_user_created"),
            lease_index("batch_job_status"),
        ]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(rows_failed__lte=models.F("rows_done")), name="batch_job_failed_le_done"
            ),
        ]

    def __str__(self) -> str:
        return f"Batch job {self.uuid} ({self.original_filename or 'upload'})"

    @property
    def rows_predicted(self) -> int:
        return self.rows_done - self.rows_failed


class BatchPredictionChunk(LeasedJob):
    """One chunk of a batch job's file: a leased job of its own, which any worker may claim.

    The job's attempt cuts the file and stores each chunk's rows as an input part; then every worker
    takes chunks. A chunk is SUCCEEDED in the transaction that stores its predictions and adds its counts
    to the job, so a chunk redone after its worker died stores and counts its rows once.
    """

    job = models.ForeignKey(BatchPredictionJob, on_delete=models.CASCADE, related_name="chunks")
    index = models.PositiveIntegerField()
    rows_done = models.PositiveIntegerField(default=0)
    rows_failed = models.PositiveIntegerField(default=0)
    # When its rows were predicted: their created_at, and the hour the rollups count them in. What the
    # rollup check rebuilds a result-file-only job's volumes from, its rows having no Prediction rows.
    predicted_at = models.DateTimeField(null=True, blank=True)
    # Seconds spent per step on this chunk (summed into the job's timings when it finishes).
    timings = models.JSONField(default=dict, blank=True)
    # Claimed by the job's own attempt rather than a chunk task: its lease ends with the job's when the
    # worker process running the job dies.
    claimed_by_job = models.BooleanField(default=False)
    # Claimed by the task of this other chunk, which went on with the free chunks after its own: its lease
    # ends (and its task is sent again) when that task's worker process dies.
    walked_from = models.PositiveBigIntegerField(null=True, blank=True)

    class Meta(LeasedJob.Meta):
        ordering = ["job", "index"]
        indexes = [lease_index("batch_chunk_status")]
        constraints = [models.UniqueConstraint(fields=["job", "index"], name="batch_chunk_job_index")]

    def __str__(self) -> str:
        return f"Chunk {self.index} of batch job {self.job_id}"


class ShadowPrediction(models.Model):
    """The challenger's answer to a production prediction, scored on a worker and never returned.

    Feedback on the prediction then scores champion and challenger on the same row (the paired comparison
    in predictions.shadow). The version and time are copied from the prediction, so the comparison reads
    this table and Feedback alone.
    """

    # Without a database constraint, like Feedback's: a shadow batch writes many rows at once.
    prediction = models.ForeignKey(
        Prediction, on_delete=models.CASCADE, related_name="shadows", db_constraint=False, db_index=False
    )
    model_version = models.ForeignKey(
        "models_registry.ModelVersion", on_delete=models.CASCADE, related_name="shadow_predictions"
    )
    # The production version that answered the client.
    champion = models.ForeignKey(
        "models_registry.ModelVersion",
        on_delete=models.CASCADE,
        related_name="+",
        db_constraint=False,
        db_index=False,
    )
    prediction_value = models.JSONField()
    probabilities = models.JSONField(null=True, blank=True)
    confidence = models.FloatField(null=True, blank=True)
    prediction_created_at = models.DateTimeField()
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            # A retried batch never scores a row twice with one version.
            models.UniqueConstraint(fields=["prediction", "model_version"], name="shadow_prediction_unique"),
        ]
        indexes = [
            models.Index(fields=["model_version", "prediction"], name="shadow_prediction_version"),
        ]

    def __str__(self) -> str:
        return f"Shadow of prediction {self.prediction_id} by {self.model_version_id}"


class ShadowBatch(LeasedJob):
    """Production predictions with ids first_id..last_id scored by the challenger on a worker.

    Created by the shadow sweep from where the challenger's previous batch ended, so a batch covers many
    rows (never one task per row) and every row once; unique per (challenger, first_id), so a sweep run
    twice creates nothing new.
    """

    registered_model = models.ForeignKey(
        "models_registry.RegisteredModel", on_delete=models.CASCADE, related_name="shadow_batches"
    )
    champion = models.ForeignKey("models_registry.ModelVersion", on_delete=models.CASCADE, related_name="+")
    challenger = models.ForeignKey(
        "models_registry.ModelVersion", on_delete=models.CASCADE, related_name="shadow_batches"
    )
    first_id = models.PositiveBigIntegerField()
    last_id = models.PositiveBigIntegerField()
    rows_scored = models.PositiveIntegerField(default=0)

    class Meta(LeasedJob.Meta):
        verbose_name_plural = "shadow batches"
        constraints = [
            models.UniqueConstraint(fields=["challenger", "first_id"], name="shadow_batch_unique_start"),
            models.CheckConstraint(
                condition=models.Q(last_id__gte=models.F("first_id")), name="shadow_batch_range"
            ),
        ]
        indexes = [lease_index("shadow_batch_status")]

    def __str__(self) -> str:
        return f"Shadow batch {self.pk} ({self.first_id}..{self.last_id})"
