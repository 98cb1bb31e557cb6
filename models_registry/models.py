"""Registered models, their versions and stage transitions, and webhooks."""

from __future__ import annotations

import uuid
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import RegexValidator, URLValidator
from django.db import models

MODEL_NAME_MAX_LENGTH = 64

model_name_validator = RegexValidator(
    regex=r"^[a-z0-9][a-z0-9_-]*\Z",
    message=(
        "Use lowercase letters, digits, hyphens and underscores, starting with a letter or digit "
        f"(at most {MODEL_NAME_MAX_LENGTH} characters)."
    ),
)


class Task(models.TextChoices):
    CLASSIFICATION = "classification", "Classification"
    REGRESSION = "regression", "Regression"


# Holdout metrics each task reports, and which way is better. Quality-gate thresholds are stored as
# {"accuracy": {"min": 0.8}} for metrics where higher is better and {"rmse": {"max": 3.0}} for error
# metrics (rmse, mae, log_loss), where the threshold is a maximum.
HIGHER_IS_BETTER = "min"
LOWER_IS_BETTER = "max"
TASK_METRICS: dict[str, dict[str, str]] = {
    Task.CLASSIFICATION: {
        "accuracy": HIGHER_IS_BETTER,
        "balanced_accuracy": HIGHER_IS_BETTER,
        "f1_macro": HIGHER_IS_BETTER,
        "roc_auc": HIGHER_IS_BETTER,
        "log_loss": LOWER_IS_BETTER,
    },
    Task.REGRESSION: {
        "rmse": LOWER_IS_BETTER,
        "mae": LOWER_IS_BETTER,
        "r2": HIGHER_IS_BETTER,
    },
}


def min_metrics_normalize(*, task: str, value: Any) -> dict[str, dict[str, float]]:
    """Validate quality-gate thresholds and return them as {"metric": {"min"|"max": number}}.

    Accepts a plain number per metric ({"accuracy": 0.8, "rmse": 3}: the direction follows the metric)
    or the stored form. A bound in the wrong direction (a minimum rmse) is refused. Raises ValidationError
    listing every problem.
    """
    if value is None or value == "":
        return {}
    if not isinstance(value, dict):
        raise ValidationError("Thresholds must be a JSON object mapping metric names to numbers.")
    if task not in TASK_METRICS:
        if value:
            raise ValidationError("Choose the model's task before setting metric thresholds.")
        return {}
    known = TASK_METRICS[task]
    problems: list[str] = []
    normalized: dict[str, dict[str, float]] = {}
    for metric, bound in value.items():
        if metric not in known:
            problems.append(f"Unknown metric {metric!r} for {task}; choose from {', '.join(sorted(known))}.")
            continue
        direction = known[metric]
        if isinstance(bound, dict):
            if set(bound) != {direction}:
                word = "minimum" if direction == HIGHER_IS_BETTER else "maximum"
                problems.append(f"The threshold for {metric!r} must be a {word}: {{{direction!r}: number}}.")
                continue
            bound = bound[direction]
        if isinstance(bound, bool) or not isinstance(bound, int | float) or bound != bound:
            problems.append(f"The threshold for {metric!r} must be a number; got {bound!r}.")
            continue
        normalized[metric] = {direction: float(bound)}
    if problems:
        raise ValidationError(problems)
    return normalized


def min_metrics_plain(value: Any) -> dict[str, Any]:
    """Thresholds as plain numbers per metric ({"accuracy": 0.8}), the form people write; the stored
    form names the direction, which follows from the metric anyway."""
    if not isinstance(value, dict):
        return {}
    return {
        metric: next(iter(bound.values())) if isinstance(bound, dict) and len(bound) == 1 else bound
        for metric, bound in value.items()
    }


class ChallengerMode(models.TextChoices):
    """How the staging version (the challenger) takes part in production traffic."""

    OFF = "off", "Off"
    # Scores every production prediction on a worker; its answers are stored, never returned.
    SHADOW = "shadow", "Shadow"
    # Answers canary_percent of production traffic, sticky by the client's key (or user).
    CANARY = "canary", "Canary"


class RegisteredModel(models.Model):
    """A named model whose versions are compared, promoted and rolled back.

    `task` and `target_column` stay blank until the first version fixes them; every later version must
    match. `min_metrics` holds the quality gate (see min_metrics_normalize for its form).
    `challenger_mode` and `canary_percent` say how the staging version meets production traffic;
    `challenger_since` is when the current mode started (shadow scores predictions from then on).
    """

    name = models.CharField(max_length=MODEL_NAME_MAX_LENGTH, unique=True, validators=[model_name_validator])
    description = models.TextField(blank=True)
    task = models.CharField(max_length=20, choices=Task.choices, blank=True)
    target_column = models.CharField(max_length=255, blank=True)
    min_metrics = models.JSONField(default=dict, blank=True)
    challenger_mode = models.CharField(
        max_length=8, choices=ChallengerMode.choices, default=ChallengerMode.OFF
    )
    canary_percent = models.PositiveSmallIntegerField(default=0)
    challenger_since = models.DateTimeField(null=True, blank=True)
    # Triton (settings.TRITON_URL): whether the production version is served by Triton, which version
    # Triton was last seen serving (None: none), when that was checked and why the last sync failed.
    serve_with_triton = models.BooleanField(default=False)
    triton_version = models.PositiveIntegerField(null=True, blank=True)
    triton_synced_at = models.DateTimeField(null=True, blank=True)
    triton_error = models.TextField(blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="registered_models",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(canary_percent__lte=100), name="registered_model_canary_percent_max"
            ),
        ]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        try:
            self.min_metrics = min_metrics_normalize(task=self.task, value=self.min_metrics)
        except ValidationError as exc:
            raise ValidationError({"min_metrics": exc.messages}) from exc


class Stage(models.TextChoices):
    NONE = "none", "None"
    STAGING = "staging", "Staging"
    PRODUCTION = "production", "Production"
    ARCHIVED = "archived", "Archived"


class ModelVersion(models.Model):
    """One trained, uploaded or imported model of a RegisteredModel; all but `stage` is fixed at creation.

    `version` is our own number (1, 2, …). Trained versions are also in MLflow's registry as
    `mlflow_version` of the model with the same name; uploaded versions are not in MLflow.
    The skops file (when there is one) is canonical; the ONNX file sits beside it when the conversion
    agreed with scikit-learn on the holdout. Keys are content-addressed storage keys with their sha256.
    """

    class Source(models.TextChoices):
        TRAINED = "trained", "Trained here"
        UPLOADED = "uploaded", "Uploaded"
        IMPORTED = "imported", "Imported from another site"

    class OnnxStatus(models.TextChoices):
        AVAILABLE = "available", "Available"
        UNAVAILABLE = "unavailable", "Unavailable"

    registered_model = models.ForeignKey(RegisteredModel, on_delete=models.PROTECT, related_name="versions")
    version = models.PositiveIntegerField()
    source = models.CharField(max_length=10, choices=Source.choices, default=Source.TRAINED)
    training_run = models.OneToOneField(
        "training.TrainingRun", null=True, blank=True, on_delete=models.PROTECT, related_name="model_version"
    )
    dataset_version = models.ForeignKey(
        "datasets.DatasetVersion",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="model_versions",
    )
    task = models.CharField(max_length=20, choices=Task.choices)
    algorithm = models.CharField(max_length=64, blank=True)
    params = models.JSONField(default=dict, blank=True)
    seed = models.PositiveBigIntegerField(null=True, blank=True)
    feature_schema = models.JSONField(default=list)
    target_column = models.CharField(max_length=255, blank=True)
    classes = models.JSONField(null=True, blank=True)
    metrics = models.JSONField(default=dict, blank=True)
    # Confusion matrix or residuals, feature importances and their plotly figures.
    artifacts = models.JSONField(default=dict, blank=True)
    # How the version was made: split, metrics left out and why, excluded columns, fit warnings.
    training_summary = models.JSONField(default=dict, blank=True)
    # The training rows binned per feature and the holdout's outputs (ml.drift); None for versions trained
    # before drift checks or uploaded, until `manage.py reference_profiles_build` makes one.
    reference_profile = models.JSONField(null=True, blank=True)
    # A few holdout rows (ml.examples) the predict form can fill itself with; empty for uploads.
    example_rows = models.JSONField(default=list, blank=True)
    skops_key = models.CharField(max_length=255, blank=True)
    skops_sha256 = models.CharField(max_length=64, blank=True)
    onnx_key = models.CharField(max_length=255, blank=True)
    onnx_sha256 = models.CharField(max_length=64, blank=True)
    onnx_status = models.CharField(max_length=12, choices=OnnxStatus.choices, default=OnnxStatus.UNAVAILABLE)
    onnx_reason = models.TextField(blank=True)
    mlflow_run_id = models.CharField(max_length=64, blank=True)
    mlflow_version = models.PositiveIntegerField(null=True, blank=True)
    stage = models.CharField(max_length=12, choices=Stage.choices, default=Stage.NONE)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="model_versions",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["registered_model__name", "-version"]
        constraints = [
            models.UniqueConstraint(
                fields=["registered_model", "version"], name="model_version_unique_number"
            ),
            models.UniqueConstraint(
                fields=["registered_model"],
                condition=models.Q(stage="production"),
                name="one_production_version_per_model",
            ),
            models.CheckConstraint(condition=models.Q(version__gte=1), name="model_version_number_positive"),
            models.CheckConstraint(
                condition=~models.Q(skops_key="") | ~models.Q(onnx_key=""),
                name="model_version_has_artifact",
            ),
        ]
        indexes = [
            models.Index(fields=["registered_model", "stage"], name="model_version_stage"),
            models.Index(fields=["skops_key"], name="model_version_skops_key"),
            models.Index(fields=["onnx_key"], name="model_version_onnx_key"),
        ]

    def __str__(self) -> str:
        return f"{self.registered_model.name} v{self.version}"

    @property
    def has_onnx(self) -> bool:
        return self.onnx_status == self.OnnxStatus.AVAILABLE and bool(self.onnx_key)


class StageTransition(models.Model):
    """One recorded change of a version's stage: who, when, from, to, why, and whether the gate was forced."""

    class Action(models.TextChoices):
        PROMOTE = "promote", "Promote"
        ROLLBACK = "rollback", "Roll back"
        ARCHIVE = "archive", "Archive"

    model_version = models.ForeignKey(ModelVersion, on_delete=models.CASCADE, related_name="transitions")
    from_stage = models.CharField(max_length=12, choices=Stage.choices)
    to_stage = models.CharField(max_length=12, choices=Stage.choices)
    action = models.CharField(max_length=10, choices=Action.choices)
    reason = models.TextField(blank=True)
    forced = models.BooleanField(default=False)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="stage_transitions",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["model_version", "-created_at"], name="stage_transition_version")]

    def __str__(self) -> str:
        return f"{self.model_version}: {self.from_stage} → {self.to_stage}"


class WebhookEvent(models.TextChoices):
    VERSION_REGISTERED = "version_registered", "Version registered"
    VERSION_PROMOTED = "version_promoted", "Version promoted"
    VERSION_ROLLED_BACK = "version_rolled_back", "Version rolled back"
    VERSION_ARCHIVED = "version_archived", "Version archived"
    # The closed loop's decisions (training.retraining), one event each.
    RETRAINING_TRIGGERED = "retraining_triggered", "Retraining triggered"
    DATASET_DERIVED = "dataset_derived", "Dataset derived"
    CHALLENGER_TRAINED = "challenger_trained", "Challenger trained"
    CHALLENGER_COMPARED = "challenger_compared", "Challenger compared"
    CHALLENGER_PROMOTED = "challenger_promoted", "Challenger promoted"
    CHALLENGER_HELD_BACK = "challenger_held_back", "Challenger held back"
    CHAMPION_ROLLED_BACK = "champion_rolled_back", "Champion rolled back"
    RETRAINING_FAILED = "retraining_failed", "Retraining failed"


def webhook_events_validate(value: Any) -> None:
    if not isinstance(value, list) or not value:
        raise ValidationError("Choose at least one event.")
    unknown = [event for event in value if event not in WebhookEvent.values]
    if unknown:
        raise ValidationError(
            f"Unknown event(s) {', '.join(map(repr, unknown))}; choose from {', '.join(WebhookEvent.values)}."
        )


class Webhook(models.Model):
    """An HTTP endpoint told about registry events of one model; bodies are signed with `secret`."""

    registered_model = models.ForeignKey(RegisteredModel, on_delete=models.CASCADE, related_name="webhooks")
    url = models.URLField(max_length=500, validators=[URLValidator(schemes=["http", "https"])])
    secret = models.CharField(max_length=255)
    events = models.JSONField(default=list, validators=[webhook_events_validate])
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["registered_model__name", "id"]

    def __str__(self) -> str:
        return f"{self.registered_model.name} → {self.url}"


class WebhookDelivery(models.Model):
    """One event for one webhook; (webhook, event_id) is unique so an event is delivered at most once."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"

    webhook = models.ForeignKey(Webhook, on_delete=models.CASCADE, related_name="deliveries")
    event = models.CharField(max_length=32, choices=WebhookEvent.choices)
    event_id = models.UUIDField(default=uuid.uuid4)
    payload = models.JSONField(default=dict)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    last_status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name_plural = "webhook deliveries"
        constraints = [
            models.UniqueConstraint(fields=["webhook", "event_id"], name="webhook_delivery_unique_event"),
        ]
        indexes = [models.Index(fields=["status", "next_attempt_at"], name="webhook_delivery_due")]

    def __str__(self) -> str:
        return f"{self.event} → {self.webhook.url} ({self.status})"


class WebhookAttempt(models.Model):
    delivery = models.ForeignKey(WebhookDelivery, on_delete=models.CASCADE, related_name="attempt_log")
    number = models.PositiveIntegerField()
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    error = models.TextField(blank=True)
    duration_ms = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["delivery", "number"]
        constraints = [
            models.UniqueConstraint(fields=["delivery", "number"], name="webhook_attempt_unique_number"),
        ]

    def __str__(self) -> str:
        return f"Attempt {self.number} of delivery {self.delivery_id}"
