"""Writes for the registry: stage transitions, rollback, quality gate, MLflow alias sync, model uploads."""

from __future__ import annotations

import json
import logging
import os
import uuid
from typing import IO, Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Max, Q

from ml import artifacts, predictor
from ml.errors import ArtifactError, PredictionInputError
from ml.pipeline import CATEGORICAL, NUMERIC
from mlops_site import storage
from models_registry import mlflow_gateway, webhook_services
from models_registry.models import (
    HIGHER_IS_BETTER,
    MODEL_NAME_MAX_LENGTH,
    TASK_METRICS,
    ModelVersion,
    RegisteredModel,
    Stage,
    StageTransition,
    Task,
    WebhookEvent,
    min_metrics_normalize,
    model_name_validator,
)

logger = logging.getLogger(__name__)

PRODUCTION_ALIAS = "production"
STAGING_ALIAS = "staging"
FEATURE_SCHEMA_MAX_COLUMNS = 2000
CLASSES_MAX = 1000
REASON_MAX_LENGTH = 2000
MODEL_OBJECT_PREFIX = "models/sha256"

# Which stages each target stage may be reached from through model_version_transition.
ALLOWED_SOURCES: dict[str, tuple[str, ...]] = {
    Stage.STAGING: (Stage.NONE, Stage.ARCHIVED),
    Stage.PRODUCTION: (Stage.NONE, Stage.STAGING, Stage.ARCHIVED),
    Stage.ARCHIVED: (Stage.NONE, Stage.STAGING, Stage.PRODUCTION),
}
PROMOTION_EVENTS = {
    Stage.STAGING: WebhookEvent.VERSION_PROMOTED,
    Stage.PRODUCTION: WebhookEvent.VERSION_PROMOTED,
    Stage.ARCHIVED: WebhookEvent.VERSION_ARCHIVED,
}


class QualityGateError(ValidationError):
    """Promotion to production refused because metrics miss the model's thresholds; `reasons` lists them."""

    def __init__(self, reasons: list[str]) -> None:
        self.reasons = reasons
        super().__init__(
            ["The version does not pass the quality gate: " + "; ".join(reasons) + "."], code="quality_gate"
        )


# ------------------------------------------------------------------------------
# Model files and payloads
# ------------------------------------------------------------------------------
def model_object_key(*, sha256: str, kind: str) -> str:
    return f"{MODEL_OBJECT_PREFIX}/{sha256[:2]}/{sha256}.{kind}"


def model_object_delete_unreferenced(*, key: str) -> None:
    # Identical model files share a key; a file another version points at stays.
    try:
        if ModelVersion.objects.filter(Q(skops_key=key) | Q(onnx_key=key)).exists():
            return
        storage.delete(key)
    except Exception:
        logger.exception("could not remove stored model file %s", key)


def model_version_payload(version: ModelVersion) -> dict[str, Any]:
    """What registry webhooks say about a version."""
    return {
        "model": version.registered_model.name,
        "version": version.version,
        "stage": version.stage,
        "source": version.source,
        "task": version.task,
        "algorithm": version.algorithm,
        "metrics": version.metrics,
        "mlflow_run_id": version.mlflow_run_id,
        "mlflow_version": version.mlflow_version,
        "dataset_version": (
            {
                "dataset": version.dataset_version.dataset.name,
                "version": version.dataset_version.version,
                "sha256": version.dataset_version.sha256,
            }
            if version.dataset_version_id
            else None
        ),
        "training_run": version.training_run_id,
        "created_at": version.created_at.isoformat() if version.created_at else None,
    }


# ------------------------------------------------------------------------------
# Registered models
# ------------------------------------------------------------------------------
#: Names a model may not take: a fixed page sits at /models/<name>/.
RESERVED_MODEL_NAMES = frozenset({"upload"})


def registered_model_name_validate(name: str) -> str:
    name = (name or "").strip()
    if not name:
        raise ValidationError("A model name is required.")
    if len(name) > MODEL_NAME_MAX_LENGTH:
        raise ValidationError(
            f"Model name {name[:80]!r} is too long: at most {MODEL_NAME_MAX_LENGTH} characters."
        )
    try:
        model_name_validator(name)
    except ValidationError:
        raise ValidationError(f"Model name {name!r} is not valid. {model_name_validator.message}") from None
    if name in RESERVED_MODEL_NAMES:
        raise ValidationError(f"Model name {name!r} is reserved for a page of this site; choose another.")
    return name


def registered_model_get_or_create(
    *, name: str, created_by: AbstractBaseUser | None, description: str = ""
) -> RegisteredModel:
    """The registered model by name, created on first use; raises ValidationError for a bad name."""
    name = registered_model_name_validate(name)
    registered, _ = RegisteredModel.objects.get_or_create(
        name=name, defaults={"created_by": created_by, "description": description}
    )
    return registered


def registered_model_create(
    *,
    name: str,
    created_by: AbstractBaseUser | None,
    task: str = "",
    target_column: str = "",
    description: str = "",
    min_metrics: dict[str, Any] | None = None,
) -> RegisteredModel:
    """Create a registered model with its quality-gate thresholds; ValidationError names each problem."""
    name = registered_model_name_validate(name)
    if task and task not in Task.values:
        raise ValidationError(f"Unknown task {task!r}. Choose {' or '.join(Task.values)}.")
    thresholds = min_metrics_normalize(task=task, value=min_metrics)
    with transaction.atomic():
        if RegisteredModel.objects.filter(name=name).exists():
            raise ValidationError(f"A model named {name!r} already exists.")
        return RegisteredModel.objects.create(
            name=name,
            task=task,
            target_column=(target_column or "").strip(),
            description=description,
            min_metrics=thresholds,
            created_by=created_by,
        )


def registered_model_thresholds_set(
    *, registered_model: RegisteredModel, min_metrics: Any
) -> RegisteredModel:
    """Replace the quality-gate thresholds (validated against the model's task)."""
    registered_model.min_metrics = min_metrics_normalize(task=registered_model.task, value=min_metrics)
    registered_model.save(update_fields=["min_metrics"])
    return registered_model


def registered_model_ids_with_versions() -> list[int]:
    return list(
        RegisteredModel.objects.filter(versions__isnull=False).distinct().values_list("pk", flat=True)
    )


# ------------------------------------------------------------------------------
# The quality gate
# ------------------------------------------------------------------------------
def quality_gate_check(*, model_version: ModelVersion) -> list[str]:
    """The reasons the version may not go to production; empty when it passes (or there are no thresholds)."""
    registered = model_version.registered_model
    try:
        thresholds = min_metrics_normalize(
            task=registered.task or model_version.task, value=registered.min_metrics
        )
    except ValidationError as exc:
        return [f"the model's thresholds are invalid ({' '.join(exc.messages)})"]
    reasons = []
    for metric, bound in sorted(thresholds.items()):
        value = (model_version.metrics or {}).get(metric)
        ((direction, limit),) = bound.items()
        word = "at least" if direction == HIGHER_IS_BETTER else "at most"
        if value is None:
            reasons.append(f"{metric} was not measured for this version (required: {word} {limit:g})")
        elif direction == HIGHER_IS_BETTER and value < limit:
            reasons.append(f"{metric} is {value:.4g}, below the minimum {limit:g}")
        elif direction != HIGHER_IS_BETTER and value > limit:
            reasons.append(f"{metric} is {value:.4g}, above the maximum {limit:g}")
    return reasons


# ------------------------------------------------------------------------------
# Transitions
# ------------------------------------------------------------------------------
def _locked(model_version: ModelVersion) -> tuple[RegisteredModel, ModelVersion]:
    # Every transition of one model locks its RegisteredModel row first, so they run one at a time;
    # the partial unique index on production stays the last line of defence.
    registered = RegisteredModel.objects.select_for_update().get(pk=model_version.registered_model_id)
    fresh = (
        ModelVersion.objects.select_for_update().select_related("registered_model").get(pk=model_version.pk)
    )
    return registered, fresh


def _record(
    *,
    version: ModelVersion,
    to_stage: str,
    action: str,
    user: AbstractBaseUser | None,
    reason: str,
    forced: bool = False,
) -> StageTransition:
    from_stage = version.stage
    version.stage = to_stage
    version.save(update_fields=["stage"])
    return StageTransition.objects.create(
        model_version=version,
        from_stage=from_stage,
        to_stage=to_stage,
        action=action,
        reason=reason,
        forced=forced,
        user=user if user is not None and user.is_authenticated else None,
    )


def _announce(
    *,
    registered: RegisteredModel,
    event: str,
    version: ModelVersion,
    transition: StageTransition,
    extra: dict,
) -> None:
    payload = {
        **model_version_payload(version),
        "transition": {
            "from_stage": transition.from_stage,
            "to_stage": transition.to_stage,
            "action": transition.action,
            "reason": transition.reason,
            "forced": transition.forced,
            "user": transition.user.get_username() if transition.user else None,
        },
        **extra,
    }
    webhook_services.webhook_event_emit(
        registered_model=registered,
        event=event,
        payload=payload,
        event_id=uuid.uuid5(uuid.NAMESPACE_URL, f"mlops-stage-transition:{transition.pk}"),
    )


def _aliases_sync_on_commit(registered_model_id: int) -> None:
    from models_registry.tasks import model_aliases_sync_task

    # robust: a broker outage must not turn a committed transition into an error; the periodic
    # model_aliases_sync_all_task repairs aliases whose message was lost.
    transaction.on_commit(lambda: model_aliases_sync_task.delay(registered_model_id), robust=True)


def _reason_clean(reason: Any) -> str:
    if reason is None:
        return ""
    if not isinstance(reason, str):
        raise ValidationError("The reason must be text.")
    reason = reason.strip()
    if len(reason) > REASON_MAX_LENGTH:
        raise ValidationError(f"The reason is too long: at most {REASON_MAX_LENGTH} characters.")
    return reason


def model_version_transition(
    *,
    model_version: ModelVersion,
    to_stage: str,
    user: AbstractBaseUser | None,
    reason: str = "",
    force: bool = False,
) -> ModelVersion:
    """Move a version to staging, production or archived, and record who, when, from, to and why.

    Promotion to production archives the previous production version in the same transaction and must
    pass the quality gate: otherwise QualityGateError (with `reasons`), unless a staff user forces it
    with a written reason, which is recorded with forced=True. Other refusals raise ValidationError.
    After commit, MLflow's aliases are synced and webhooks are sent.
    """
    reason = _reason_clean(reason)
    if to_stage not in ALLOWED_SOURCES:
        raise ValidationError(
            f"Unknown target stage {to_stage!r}. Choose one of: {', '.join(ALLOWED_SOURCES)}."
        )
    if force:
        if user is None or not getattr(user, "is_staff", False):
            raise ValidationError("Only staff members may force a promotion past the quality gate.")
        if not reason:
            raise ValidationError("Forcing a promotion past the quality gate needs a written reason.")

    with transaction.atomic():
        registered, version = _locked(model_version)
        if version.stage == to_stage:
            raise ValidationError(f"{version} is already in {version.get_stage_display().lower()}.")
        if version.stage not in ALLOWED_SOURCES[to_stage]:
            raise ValidationError(
                f"{version} is in {version.get_stage_display().lower()} and cannot move to "
                f"{Stage(to_stage).label.lower()}: promote another version to production or roll back."
            )
        forced = False
        displaced: list[tuple[ModelVersion, StageTransition]] = []
        if to_stage == Stage.PRODUCTION:
            failing = quality_gate_check(model_version=version)
            if failing and not force:
                raise QualityGateError(failing)
            forced = bool(failing)
            current = ModelVersion.objects.select_for_update().filter(
                registered_model=registered, stage=Stage.PRODUCTION
            )
            for previous in current:
                displaced.append(
                    (
                        previous,
                        _record(
                            version=previous,
                            to_stage=Stage.ARCHIVED,
                            action=StageTransition.Action.ARCHIVE,
                            user=user,
                            reason=f"Replaced in production by version {version.version}.",
                        ),
                    )
                )
        action = (
            StageTransition.Action.ARCHIVE if to_stage == Stage.ARCHIVED else StageTransition.Action.PROMOTE
        )
        if forced:
            gate_note = "Forced past the quality gate (" + "; ".join(failing) + ")"
            recorded_reason = f"{reason}\n\n{gate_note}."
        else:
            recorded_reason = reason
        transition = _record(
            version=version,
            to_stage=to_stage,
            action=action,
            user=user,
            reason=recorded_reason,
            forced=forced,
        )
        for previous, archived in displaced:
            _announce(
                registered=registered,
                event=WebhookEvent.VERSION_ARCHIVED,
                version=previous,
                transition=archived,
                extra={"replaced_by": version.version},
            )
        _announce(
            registered=registered,
            event=PROMOTION_EVENTS[to_stage],
            version=version,
            transition=transition,
            extra={"previous_production": [p.version for p, _ in displaced]}
            if to_stage == Stage.PRODUCTION
            else {},
        )
        _aliases_sync_on_commit(registered.pk)
    return version


def rollback_target(*, registered_model: RegisteredModel) -> ModelVersion | None:
    """The version that was in production before the current one, from the transition history."""
    current = registered_model.versions.filter(stage=Stage.PRODUCTION).first()
    history = (
        StageTransition.objects.filter(
            model_version__registered_model=registered_model, to_stage=Stage.PRODUCTION
        )
        .select_related("model_version")
        .order_by("-created_at", "-id")
    )
    for transition in history:
        if current is None or transition.model_version_id != current.pk:
            return transition.model_version
    return None


def model_version_rollback(
    *, registered_model: RegisteredModel, user: AbstractBaseUser | None, reason: str = ""
) -> ModelVersion:
    """Put the previous production version back in production and archive the current one.

    The quality gate is not applied: the target already served production. Raises ValidationError when
    the model has no earlier production version.
    """
    reason = _reason_clean(reason)
    with transaction.atomic():
        registered = RegisteredModel.objects.select_for_update().get(pk=registered_model.pk)
        target = rollback_target(registered_model=registered)
        if target is None:
            raise ValidationError(
                f"Model {registered.name!r} has no earlier production version to roll back to."
            )
        target = ModelVersion.objects.select_for_update().select_related("registered_model").get(pk=target.pk)
        current = ModelVersion.objects.select_for_update().filter(
            registered_model=registered, stage=Stage.PRODUCTION
        )
        demoted = []
        for previous in current:
            note = f"Rolled back to version {target.version}." + (f" {reason}" if reason else "")
            demoted.append(
                (
                    previous,
                    _record(
                        version=previous,
                        to_stage=Stage.ARCHIVED,
                        action=StageTransition.Action.ROLLBACK,
                        user=user,
                        reason=note,
                    ),
                )
            )
        transition = _record(
            version=target,
            to_stage=Stage.PRODUCTION,
            action=StageTransition.Action.ROLLBACK,
            user=user,
            reason=reason,
        )
        for previous, archived in demoted:
            _announce(
                registered=registered,
                event=WebhookEvent.VERSION_ARCHIVED,
                version=previous,
                transition=archived,
                extra={"replaced_by": target.version},
            )
        _announce(
            registered=registered,
            event=WebhookEvent.VERSION_ROLLED_BACK,
            version=target,
            transition=transition,
            extra={"rolled_back_from": [p.version for p, _ in demoted]},
        )
        _aliases_sync_on_commit(registered.pk)
    return target


# ------------------------------------------------------------------------------
# MLflow aliases
# ------------------------------------------------------------------------------
def _staging_alias_version(registered: RegisteredModel) -> ModelVersion | None:
    """Of the versions in staging and in MLflow, the one promoted to staging last."""
    staged = registered.versions.filter(stage=Stage.STAGING, mlflow_version__isnull=False)
    latest = (
        StageTransition.objects.filter(model_version__in=staged, to_stage=Stage.STAGING)
        .order_by("-created_at", "-id")
        .select_related("model_version")
        .first()
    )
    if latest is not None:
        return latest.model_version
    return staged.order_by("-version").first()


def model_aliases_sync(*, registered_model_id: int) -> dict[str, int | None]:
    """Make the `production` and `staging` aliases in MLflow point where the database says; idempotent.

    `production` names the production version's MLflow version; `staging` the staging version
    promoted last. An alias whose version is not in MLflow (an uploaded model) is removed. Other
    aliases are left alone. Returns the aliases as they should now be.
    """
    registered = RegisteredModel.objects.filter(pk=registered_model_id).first()
    if registered is None:
        return {}
    production = registered.versions.filter(stage=Stage.PRODUCTION, mlflow_version__isnull=False).first()
    staging = _staging_alias_version(registered)
    wanted: dict[str, int | None] = {
        PRODUCTION_ALIAS: production.mlflow_version if production else None,
        STAGING_ALIAS: staging.mlflow_version if staging else None,
    }
    try:
        current = mlflow_gateway.aliases_get(name=registered.name)
    except mlflow_gateway.ModelNotFound:
        if any(v is not None for v in wanted.values()):
            logger.error("model %s is not in MLflow's registry; its aliases cannot be set", registered.name)
        return wanted
    for alias, version in wanted.items():
        if version is None:
            if alias in current:
                mlflow_gateway.alias_delete(name=registered.name, alias=alias)
        elif current.get(alias) != version:
            mlflow_gateway.alias_set(name=registered.name, alias=alias, version=version)
    return wanted


# ------------------------------------------------------------------------------
# Uploading externally trained models
# ------------------------------------------------------------------------------
def model_max_upload_bytes() -> int:
    # The whole file is read into memory to be checked, hence a cap of its own.
    return settings.MODEL_MAX_UPLOAD_MB * 1024 * 1024


def _read_capped(file: IO[bytes], *, filename: str) -> bytes:
    limit = model_max_upload_bytes()
    size = getattr(file, "size", None)
    too_big = ValidationError(
        f"{filename} is larger than the {limit // (1024 * 1024)} MB limit for model files; "
        "nothing was stored."
    )
    if isinstance(size, int) and size > limit:
        raise too_big
    if hasattr(file, "seek"):
        file.seek(0)
    data = file.read(limit + 1)
    if len(data) > limit:
        raise too_big
    return data


def _number_or_none(value: Any, *, where: str, problems: list[str]) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
        problems.append(f"{where} must be a number or null; got {value!r}.")
        return None
    return float(value)


def feature_schema_validate(value: Any) -> list[dict[str, Any]]:
    """Check an uploaded feature schema and return it in the form training writes.

    Each column: {"name": text, "kind": "numeric"|"categorical", optional "min"/"max" for numeric,
    optional "categories" (list of text) for categorical}. A JSON text is parsed first.
    """
    if isinstance(value, str | bytes):
        try:
            value = json.loads(value)
        except ValueError as exc:
            raise ValidationError(f"The feature schema is not valid JSON: {exc}") from None
    if not isinstance(value, list) or not value:
        raise ValidationError(
            "The feature schema must be a non-empty JSON list of columns like "
            '{"name": "age", "kind": "numeric"}.'
        )
    if len(value) > FEATURE_SCHEMA_MAX_COLUMNS:
        raise ValidationError(f"The feature schema lists more than {FEATURE_SCHEMA_MAX_COLUMNS} columns.")
    problems: list[str] = []
    seen: set[str] = set()
    schema = []
    for position, column in enumerate(value, start=1):
        where = f"Feature schema column {position}"
        if not isinstance(column, dict):
            problems.append(f"{where} must be an object with a name and a kind; got {column!r}.")
            continue
        name, kind = column.get("name"), column.get("kind")
        if not isinstance(name, str) or not name.strip() or len(name) > 255:
            problems.append(f"{where} needs a name of 1-255 characters.")
            continue
        where = f"Feature column {name!r}"
        if name in seen:
            problems.append(f"{where} appears twice.")
            continue
        seen.add(name)
        unknown = sorted(set(column) - {"name", "kind", "dtype", "min", "max", "categories", "missing_count"})
        if unknown:
            problems.append(f"{where} has unknown field(s): {', '.join(unknown)}.")
        if kind == NUMERIC:
            low = _number_or_none(column.get("min"), where=f"{where}: min", problems=problems)
            high = _number_or_none(column.get("max"), where=f"{where}: max", problems=problems)
            if low is not None and high is not None and low > high:
                problems.append(f"{where}: min {low:g} is greater than max {high:g}.")
            schema.append({"name": name, "kind": kind, "dtype": "float64", "min": low, "max": high})
        elif kind == CATEGORICAL:
            categories = column.get("categories", [])
            if not isinstance(categories, list) or not all(isinstance(c, str) for c in categories):
                problems.append(f"{where}: categories must be a list of text values.")
                categories = []
            schema.append(
                {"name": name, "kind": kind, "dtype": "string", "categories": sorted(set(categories))}
            )
        else:
            problems.append(f"{where} has kind {kind!r}; expected 'numeric' or 'categorical'.")
    if problems:
        raise ValidationError(problems)
    return schema


def _classes_validate(classes: Any, *, task: str) -> list[Any] | None:
    if isinstance(classes, str):
        try:
            classes = json.loads(classes) if classes.strip() else None
        except ValueError as exc:
            raise ValidationError(f"The classes are not valid JSON: {exc}") from None
    if task == Task.REGRESSION:
        if classes:
            raise ValidationError("A regression model has no classes; leave them empty.")
        return None
    if classes is None:
        return None
    if not isinstance(classes, list) or len(classes) < 2 or len(classes) > CLASSES_MAX:
        raise ValidationError(f"The classes must be a JSON list of 2 to {CLASSES_MAX} labels.")
    if not all(isinstance(c, str) or (isinstance(c, int) and not isinstance(c, bool)) for c in classes):
        raise ValidationError("Each class label must be text or a whole number.")
    if len(set(map(repr, classes))) != len(classes):
        raise ValidationError("The class labels must be distinct.")
    return classes


def _metrics_validate(metrics: Any, *, task: str) -> dict[str, float]:
    if metrics in (None, "", {}):
        return {}
    if isinstance(metrics, str):
        try:
            metrics = json.loads(metrics)
        except ValueError as exc:
            raise ValidationError(f"The metrics are not valid JSON: {exc}") from None
    if not isinstance(metrics, dict):
        raise ValidationError("The metrics must be a JSON object of metric names to numbers.")
    known = TASK_METRICS[task]
    problems = [f"Unknown metric {name!r} for {task}." for name in metrics if name not in known]
    problems += [
        f"Metric {name!r} must be a number; got {value!r}."
        for name, value in metrics.items()
        if isinstance(value, bool) or not isinstance(value, int | float) or value != value
    ]
    if problems:
        raise ValidationError(problems)
    return {name: float(value) for name, value in metrics.items()}


def _example_row(schema: list[dict[str, Any]]) -> dict[str, Any]:
    row: dict[str, Any] = {}
    for column in schema:
        if column["kind"] == NUMERIC:
            low, high = column.get("min"), column.get("max")
            row[column["name"]] = (
                (low + high) / 2 if low is not None and high is not None else (low or high or 0.0)
            )
        else:
            categories = column.get("categories") or []
            row[column["name"]] = categories[0] if categories else "unknown"
    return row


def model_version_upload(
    *,
    registered_model_name: str,
    file: IO[bytes],
    filename: str,
    feature_schema: Any,
    task: str,
    created_by: AbstractBaseUser | None,
    classes: Any = None,
    target_column: str = "",
    metrics: Any = None,
    description: str = "",
) -> ModelVersion:
    """Register an externally trained skops or ONNX file as the next version of a model.

    The file is recognised by its content and must be loadable with our trusted types (skops) or pass
    the ONNX checker, and it must predict one row built from the feature schema. Pickle, joblib and
    anything else are refused. Uploaded versions are not in MLflow. Raises ValidationError naming the
    problem; nothing is stored then.
    """
    filename = os.path.basename(filename or getattr(file, "name", "") or "model")[:255]
    name = registered_model_name_validate(registered_model_name)
    if task not in Task.values:
        raise ValidationError(f"Choose the model's task: {' or '.join(Task.values)}.")
    schema = feature_schema_validate(feature_schema)
    class_list = _classes_validate(classes, task=task)
    metric_values = _metrics_validate(metrics, task=task)
    target_column = (target_column or "").strip()
    data = _read_capped(file, filename=filename)
    try:
        uploaded = artifacts.uploaded_model_validate(data=data, filename=filename)
    except ArtifactError as exc:
        raise ValidationError(f"{exc} Nothing was stored.") from None

    try:
        if uploaded.kind == artifacts.SKOPS:
            model = predictor.SklearnPredictor(data, sha256=uploaded.sha256, feature_schema=schema)
            if task == Task.CLASSIFICATION and model.classes is not None:
                if class_list is not None and [str(c) for c in class_list] != [str(c) for c in model.classes]:
                    raise ValidationError(
                        f"The classes given ({class_list}) differ from the model's own ({model.classes})."
                    )
                class_list = model.classes
        else:
            model = predictor.OnnxPredictor(
                data, sha256=uploaded.sha256, feature_schema=schema, classes=class_list
            )
            if task == Task.CLASSIFICATION and class_list is None:
                class_list = model.classes
        labels, _ = model.predict([_example_row(schema)])
    except (ArtifactError, PredictionInputError) as exc:
        raise ValidationError(f"The model does not work with the given feature schema: {exc}") from None
    except ValidationError:
        raise
    except Exception as exc:  # a foreign pipeline can fail in any way on a row built from the schema
        raise ValidationError(
            f"The model could not predict a row built from the feature schema: {type(exc).__name__}: {exc}"
        ) from None
    if task == Task.CLASSIFICATION and class_list is None:
        raise ValidationError("Give the class labels of this classification model (a JSON list).")
    if len(labels) != 1:
        raise ValidationError("The model did not return one prediction for one row.")

    key = model_object_key(sha256=uploaded.sha256, kind=uploaded.kind)
    newly_stored = not storage.exists(key)
    if newly_stored:
        storage.put_bytes(key, data)
    try:
        with transaction.atomic():
            registered = registered_model_get_or_create(
                name=name, created_by=created_by, description=description
            )
            registered = RegisteredModel.objects.select_for_update().get(pk=registered.pk)
            if registered.task and registered.task != task:
                raise ValidationError(
                    f"Model {name!r} holds {registered.task} versions; this upload is {task}."
                )
            if registered.target_column and target_column and registered.target_column != target_column:
                raise ValidationError(
                    f"Model {name!r} predicts {registered.target_column!r}, not {target_column!r}."
                )
            number = (registered.versions.aggregate(latest=Max("version"))["latest"] or 0) + 1
            is_skops = uploaded.kind == artifacts.SKOPS
            version = ModelVersion.objects.create(
                registered_model=registered,
                version=number,
                source=ModelVersion.Source.UPLOADED,
                task=task,
                feature_schema=schema,
                target_column=target_column or registered.target_column,
                classes=class_list,
                metrics=metric_values,
                training_summary={"uploaded_filename": filename, "size_bytes": uploaded.size},
                skops_key=key if is_skops else "",
                skops_sha256=uploaded.sha256 if is_skops else "",
                onnx_key="" if is_skops else key,
                onnx_sha256="" if is_skops else uploaded.sha256,
                onnx_status=ModelVersion.OnnxStatus.UNAVAILABLE
                if is_skops
                else ModelVersion.OnnxStatus.AVAILABLE,
                onnx_reason="Uploaded as a skops file; no ONNX conversion is made for uploads."
                if is_skops
                else "",
                created_by=created_by,
            )
            if not registered.task or (target_column and not registered.target_column):
                registered.task = registered.task or task
                registered.target_column = registered.target_column or target_column
                registered.save(update_fields=["task", "target_column"])
            webhook_services.webhook_event_emit(
                registered_model=registered,
                event=WebhookEvent.VERSION_REGISTERED,
                payload=model_version_payload(version),
            )
    except BaseException:
        if newly_stored:
            model_object_delete_unreferenced(key=key)
        raise
    return version
