"""Writes for registered models: names, thresholds, stored model files, webhook payloads, MLflow aliases."""

from __future__ import annotations

import logging
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import Max, ProtectedError, Q

from mlops_site import errors, storage
from models_registry import mlflow_gateway
from models_registry.models import (
    MODEL_NAME_MAX_LENGTH,
    ModelVersion,
    RegisteredModel,
    Stage,
    StageTransition,
    Task,
    min_metrics_normalize,
    model_name_validator,
)
from training.models import TrainingRun

logger = logging.getLogger(__name__)
PRODUCTION_ALIAS = "production"
STAGING_ALIAS = "staging"
MODEL_OBJECT_PREFIX = "models/sha256"


class ModelNameTaken(ValidationError):
    """A new model's name is already registered: a conflict with what exists (409), not malformed input."""


class ModelHasVersions(errors.Conflict):
    """Only a model without versions may be deleted (409): versions are the record of what was served."""

    code = "model_has_versions"


class ModelInUse(errors.Conflict):
    """Something still needs the model (a training run in progress): it cannot be deleted now (409)."""

    code = "model_in_use"


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


def registered_model_for_version(
    *, name: str, created_by: AbstractBaseUser | None, description: str = ""
) -> RegisteredModel:
    """The model a new version is recorded under, locked FOR UPDATE until the caller's transaction ends.

    Created when the name is new, so a model exists only once it has a version (or was created on
    purpose); call it in the transaction that creates the version. The lock orders the version against
    registered_model_delete: a model deleted meanwhile is created again rather than missed.
    """
    name = registered_model_name_validate(name)
    for _ in range(3):
        found = RegisteredModel.objects.select_for_update().filter(name=name).first()
        if found is not None:
            return found
        try:
            with transaction.atomic():
                return RegisteredModel.objects.create(
                    name=name, created_by=created_by, description=description
                )
        except IntegrityError:
            # Another transaction registered the name first: lock its row on the next pass.
            continue
    raise ModelInUse(f"Model {name!r} is being created and deleted at once; please try again.")


def version_number_next(registered_model: RegisteredModel) -> int:
    """The number the model's next version takes: one above its highest. Call it with the model locked by
    registered_model_for_version, in the transaction that creates the version."""
    return (registered_model.versions.aggregate(latest=Max("version"))["latest"] or 0) + 1


def registered_model_delete(*, registered_model: RegisteredModel, user: AbstractBaseUser | None) -> None:
    """Delete a model that has no versions, with its webhooks and retraining settings.

    Refused with ModelHasVersions while it has versions, and with ModelInUse while a training run is
    queued or running for it. The row is locked first, so a version recorded at the same moment (which
    locks it too) either comes first and the delete is refused, or waits and registers the model anew.
    Afterwards the model is removed from MLflow's registry too when MLflow holds no version of it.
    """
    with transaction.atomic():
        locked = RegisteredModel.objects.select_for_update().filter(pk=registered_model.pk).first()
        if locked is None:
            return
        registered_model_delete_check(registered_model=locked)
        try:
            locked.delete()
        except ProtectedError as exc:
            held_by = sorted({str(obj) for obj in exc.protected_objects})[:5]
            raise ModelInUse(
                f"Model {locked.name!r} cannot be deleted: it is still referred to by {'; '.join(held_by)}."
            ) from None
    logger.info(
        "model %s deleted by %s", locked.name, user.get_username() if user is not None else "the system"
    )
    try:
        mlflow_gateway.registered_model_delete_if_empty(name=locked.name)
    except mlflow_gateway.RegistryError:
        # Our record is gone already; an empty name left in MLflow is harmless and is reused on retraining.
        logger.warning("could not remove model %s from MLflow's registry", locked.name, exc_info=True)


def registered_model_delete_check(*, registered_model: RegisteredModel) -> None:
    """Raise ModelHasVersions or ModelInUse, saying why, when the model cannot be deleted now."""
    count = registered_model.versions.count()
    if count:
        raise ModelHasVersions(
            f"Model {registered_model.name!r} has {count} version{'s' if count != 1 else ''} and cannot "
            "be deleted: versions are the record of what was trained and served (predictions, feedback "
            "and MLflow refer to them). Archive the versions you no longer want instead."
        )
    active = _unfinished_training_runs(registered_model)
    if active:
        plural = len(active) > 1
        raise ModelInUse(
            f"Model {registered_model.name!r} cannot be deleted while training run{'s' if plural else ''} "
            f"{', '.join(map(str, active))} {'are' if plural else 'is'} queued or running for it; wait "
            "for the run to finish."
        )


def _unfinished_training_runs(registered: RegisteredModel) -> list[int]:
    return list(
        TrainingRun.objects.filter(registered_model=registered)
        .exclude(status__in=TrainingRun.TERMINAL)
        .order_by("pk")
        .values_list("pk", flat=True)
    )


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
            raise ModelNameTaken(f"A model named {name!r} already exists.")
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


def model_aliases_sync_on_commit(*, registered_model_id: int) -> None:
    """Queue the MLflow alias sync once the current transaction commits."""
    from models_registry.tasks import model_aliases_sync_task

    # robust: a broker outage must not turn a committed transition into an error; the periodic
    # model_aliases_sync_all_task repairs aliases whose message was lost.
    transaction.on_commit(lambda: model_aliases_sync_task.delay(registered_model_id), robust=True)
