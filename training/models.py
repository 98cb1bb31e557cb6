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
    # The model the run adds a version to. A new name is registered only when the run records its first
    # version, so a failed run leaves no empty model: until then this is null and `model_name` says which.
    # A model deleted while it has no versions keeps the record of its failed runs (SET_NULL).
    registered_model = models.ForeignKey(
        "models_registry.RegisteredModel",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="training_runs",
    )
    model_name = models.CharField(max_length=64)
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
    # An explicit holdout instead of the seeded split (a retraining's): {"original_rows": n,
    # "original_seed": s, "original_test_size": t, "recent_from_row": k, ...}; see ml.holdout.HoldoutPlan.
    holdout = models.JSONField(default=dict, blank=True)
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
        return f"Training run {self.pk} ({self.model_name}, {self.algorithm})"


class Window(models.TextChoices):
    """Which labelled predictions the live metric is read over (feedback.selectors windows)."""

    LAST = "last", "Last N labelled"
    DAY = "24h", "Last 24 hours"
    WEEK = "7d", "Last 7 days"


class RetrainingPolicy(models.Model):
    """When and how a registered model retrains itself from feedback, and what a challenger must show.

    Off until enabled. `metric` is a live metric of the model's task (accuracy or f1_macro; mae or rmse),
    compared with `threshold` over `window` once at least `min_labels` outcomes are in it. A challenger is
    promoted only when it beats the champion by `margin`, with a paired test below `alpha`, on the holdout
    and on `shadow_min_labels` labelled shadow rows, and passes the quality gate; with `auto_promote` off
    it waits for a staff click instead. A new champion is rolled back when its live score over its first
    `rollback_labels` outcomes falls below its predecessor's by the margin.
    """

    registered_model = models.OneToOneField(
        "models_registry.RegisteredModel", on_delete=models.CASCADE, related_name="retraining_policy"
    )
    enabled = models.BooleanField(default=False)
    metric = models.CharField(max_length=20)
    threshold = models.FloatField()
    min_labels = models.PositiveIntegerField(default=100)
    window = models.CharField(max_length=4, choices=Window.choices, default=Window.LAST)
    last_n = models.PositiveIntegerField(default=200)
    cooldown_minutes = models.PositiveIntegerField(default=360)
    margin = models.FloatField(default=0.01)
    alpha = models.FloatField(default=0.05)
    auto_promote = models.BooleanField(default=True)
    max_per_day = models.PositiveSmallIntegerField(default=3)
    # Share of the newest labelled rows kept out of training to judge champion and challenger on.
    recent_holdout_share = models.FloatField(default=0.3)
    # The newest labelled predictions a retraining adds to the champion's training data: older outcomes may
    # teach a concept that has since changed.
    feedback_rows = models.PositiveIntegerField(default=10_000)
    # The weight of the outcomes in the window the trigger read, against 1 for older rows. Above 1, recent
    # labels outvote outdated ones sooner, but the noise in a few heavy rows is learnt too.
    recent_weight = models.FloatField(default=1.0)
    shadow_min_labels = models.PositiveIntegerField(default=100)
    rollback_labels = models.PositiveIntegerField(default=200)
    # Also retrain when the champion's latest drift report finds it drifting (monitoring.DriftReport): for
    # models whose labels come late or never, where the live metric cannot cross the threshold in time.
    trigger_on_drift = models.BooleanField(default=False)
    updated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name_plural = "retraining policies"
        constraints = [
            models.CheckConstraint(
                condition=models.Q(margin__gte=0, margin__lt=1), name="policy_margin_range"
            ),
            models.CheckConstraint(condition=models.Q(alpha__gt=0, alpha__lt=1), name="policy_alpha_range"),
            models.CheckConstraint(
                condition=models.Q(recent_holdout_share__gt=0, recent_holdout_share__lt=1),
                name="policy_recent_holdout_share_range",
            ),
        ]

    def __str__(self) -> str:
        return f"Retraining policy of {self.registered_model.name}"


class Retraining(LeasedJob):
    """One pass of the closed loop for a model: derive a dataset, train a challenger, compare, decide.

    The job (on the leased-job engine) derives the dataset version, trains the challenger through a
    TrainingRun, registers it in staging and compares it with the champion on the holdout; it then
    SUCCEEDS with `decision` SHADOWING (or HELD_BACK at once when the holdout already rules it out). The
    decision sweep later promotes or holds back from the shadow feedback. At most one retraining per model
    is queued or running (a partial unique index), which is the loop's lock.
    """

    class Trigger(models.TextChoices):
        SCHEDULE = "schedule", "Live metric below threshold"
        MANUAL = "manual", "Started by staff"
        ALERT = "alert", "Alert"
        DRIFT = "drift", "Drift"

    class Step(models.TextChoices):
        DERIVE = "derive", "Deriving the dataset"
        TRAIN = "train", "Training the challenger"
        EVALUATE = "evaluate", "Comparing on the holdout"
        DONE = "done", "Done"

    class Decision(models.TextChoices):
        PENDING = "", "Pending"
        SHADOWING = "shadowing", "Shadowing"
        AWAITING_APPROVAL = "awaiting_approval", "Awaiting approval"
        PROMOTED = "promoted", "Promoted"
        HELD_BACK = "held_back", "Held back"
        ROLLED_BACK = "rolled_back", "Rolled back"

    registered_model = models.ForeignKey(
        "models_registry.RegisteredModel", on_delete=models.PROTECT, related_name="retrainings"
    )
    trigger = models.CharField(max_length=10, choices=Trigger.choices)
    reason = models.TextField(blank=True)
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    champion = models.ForeignKey("models_registry.ModelVersion", on_delete=models.PROTECT, related_name="+")
    dataset_version = models.ForeignKey(
        "datasets.DatasetVersion", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    training_run = models.OneToOneField(
        TrainingRun, null=True, blank=True, on_delete=models.PROTECT, related_name="retraining"
    )
    challenger = models.ForeignKey(
        "models_registry.ModelVersion", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    step = models.CharField(max_length=10, choices=Step.choices, default=Step.DERIVE)
    decision = models.CharField(max_length=20, choices=Decision.choices, blank=True, default=Decision.PENDING)
    # Holdout and shadow comparisons, the trigger's live figures, the predecessor's live score.
    figures = models.JSONField(default=dict, blank=True)
    decided_at = models.DateTimeField(null=True, blank=True)

    class Meta(LeasedJob.Meta):
        constraints = [
            models.UniqueConstraint(
                fields=["registered_model"],
                condition=models.Q(status__in=["queued", "running"]),
                name="one_active_retraining_per_model",
            ),
        ]
        indexes = [
            lease_index("retraining_status"),
            models.Index(fields=["registered_model", "-created_at"], name="retraining_model_created"),
        ]

    def __str__(self) -> str:
        return f"Retraining {self.pk} of {self.registered_model.name}"


class RetrainingEvent(models.Model):
    """One decision of the closed loop, shown on the model page and in the API; each is also a webhook."""

    class Kind(models.TextChoices):
        TRIGGERED = "triggered", "Triggered"
        REFUSED = "refused", "Refused"
        DATASET_DERIVED = "dataset_derived", "Dataset derived"
        TRAINED = "trained", "Trained"
        COMPARED = "compared", "Compared"
        AWAITING_APPROVAL = "awaiting_approval", "Awaiting approval"
        PROMOTED = "promoted", "Promoted"
        HELD_BACK = "held_back", "Held back"
        ROLLED_BACK = "rolled_back", "Rolled back"
        FAILED = "failed", "Failed"

    registered_model = models.ForeignKey(
        "models_registry.RegisteredModel", on_delete=models.CASCADE, related_name="retraining_events"
    )
    retraining = models.ForeignKey(
        Retraining, null=True, blank=True, on_delete=models.CASCADE, related_name="events"
    )
    kind = models.CharField(max_length=20, choices=Kind.choices)
    message = models.TextField()
    figures = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["registered_model", "-created_at"], name="retraining_event_model"),
        ]
        constraints = [
            # A retried step records its decision once.
            models.UniqueConstraint(
                fields=["retraining", "kind"],
                condition=models.Q(retraining__isnull=False),
                name="retraining_event_once_per_kind",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.registered_model.name}: {self.kind}"


class DemoModel(models.Model):
    """The demo model a site trains on its first start (`manage.py demo_model`), at most one per site.

    The row outlives the model: once staff remove the demo, a later start does not train it again.
    """

    # One row per site: the constant unique slot makes a second concurrent start find the first's row.
    slot = models.PositiveSmallIntegerField(default=1, unique=True, editable=False)
    name = models.CharField(max_length=100)
    registered_model = models.OneToOneField(
        "models_registry.RegisteredModel",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="demo",
    )
    training_run = models.OneToOneField(
        TrainingRun, null=True, blank=True, on_delete=models.SET_NULL, related_name="demo"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    promoted_at = models.DateTimeField(null=True, blank=True)
    removed_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"Demo model {self.name}"
