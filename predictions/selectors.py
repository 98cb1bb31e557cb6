"""Reads for predictions: version resolution, servable models, scoped predictions and batch jobs."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from django.db.models import Exists, OuterRef, QuerySet
from django.http import Http404
from django.utils import timezone

from mlops_site.errors import problem
from models_registry import selectors as registry_selectors
from models_registry.models import ModelVersion, RegisteredModel, Stage
from predictions.errors import InputInvalid, ModelNotFound, NoVersionInStage
from predictions.models import BatchPredictionJob, Channel, Prediction

#: History filters by feedback state, as lookups through the reverse one-to-one of feedback.Feedback.
FEEDBACK_FILTERS: dict[str, dict[str, Any]] = {
    "labelled": {"feedback__isnull": False},
    "unlabelled": {"feedback__isnull": True},
    "wrong": {"feedback__correct": False},
}

#: Stages a client may ask for instead of pinning a version.
SERVABLE_STAGES = (Stage.PRODUCTION.value, Stage.STAGING.value)


def _option_invalid(name: str, message: str) -> InputInvalid:
    return InputInvalid([problem(message, field=name, code="invalid_option")])


def prediction_target_check(*, version: Any = None, stage: Any = None) -> str:
    """The stage to resolve for a pinned `version` or a `stage` (None: production), given not both.

    The one check of these options for single and batch predictions; raises InputInvalid naming the option.
    """
    if version is not None and stage is not None:
        raise _option_invalid("stage", 'Give either "version" (pin a version) or "stage", not both.')
    if version is not None:
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise _option_invalid(
                "version", f"'version' must be a version number (1, 2, ...); got {version!r}."
            )
        return Stage.PRODUCTION.value
    stage = Stage.PRODUCTION.value if stage is None else stage
    if stage not in SERVABLE_STAGES:
        raise _option_invalid(
            "stage", f"'stage' must be one of: {', '.join(SERVABLE_STAGES)}; got {stage!r}."
        )
    return stage


def model_version_resolve(
    *, registered_model_name: str, version: int | None = None, stage: str = Stage.PRODUCTION
) -> ModelVersion:
    """The pinned version, or the version now in `stage` (the newest one, should staging hold several).

    One indexed query on success, never cached: a promotion or rollback is seen by the very next request
    in every process. Raises ModelNotFound or NoVersionInStage.
    """
    versions = ModelVersion.objects.select_related("registered_model").filter(
        registered_model__name=registered_model_name
    )
    if version is not None:
        found = versions.filter(version=version).first()
        if found is None:
            if not RegisteredModel.objects.filter(name=registered_model_name).exists():
                raise ModelNotFound(f"There is no registered model named '{registered_model_name}'.")
            raise ModelNotFound(f"Model '{registered_model_name}' has no version {version}.")
        return found
    found = versions.filter(stage=stage).order_by("-version").first()
    if found is None:
        if not RegisteredModel.objects.filter(name=registered_model_name).exists():
            raise ModelNotFound(f"There is no registered model named '{registered_model_name}'.")
        raise NoVersionInStage(
            f"Model '{registered_model_name}' has no {stage} version yet, so it cannot predict. "
            f"Promote a version to {stage}, or pin a version."
        )
    return found


def production_version_list() -> list[ModelVersion]:
    """The production version of every registered model that has one, by model name."""
    return list(
        ModelVersion.objects.select_related("registered_model")
        .filter(stage=Stage.PRODUCTION)
        .order_by("registered_model__name")
    )


def _day_start(day: dt.date) -> dt.datetime:
    return timezone.make_aware(dt.datetime.combine(day, dt.time.min))


def prediction_list(
    *,
    user: Any,
    model: str | None = None,
    created_after: dt.date | dt.datetime | None = None,
    created_before: dt.date | dt.datetime | None = None,
    feedback: str | None = None,
    channel: str | None = None,
) -> QuerySet[Prediction]:
    """The predictions `user` may see (their own; staff: everyone's), newest first, with their key and
    outcome joined.

    `feedback`: "labelled", "unlabelled" or "wrong" (labelled as not right). `channel`: page, api or batch.

    A date bound covers whole days: created_after=2024-05-01 starts at its midnight, created_before=2024-05-03
    includes all of May 3rd. A datetime bound is used as it is (after: >=, before: <).
    """
    predictions = Prediction.objects.select_related(
        "model_version__registered_model", "user", "request", "key", "feedback"
    ).defer(*registry_selectors.version_heavy_fields("model_version"))
    if not user.is_staff:
        predictions = predictions.filter(user=user)
    if model:
        predictions = predictions.filter(model_version__registered_model__name=model)
    if feedback is not None:
        if feedback not in FEEDBACK_FILTERS:
            raise _option_invalid("feedback", f"'feedback' must be one of: {', '.join(FEEDBACK_FILTERS)}.")
        predictions = predictions.filter(**FEEDBACK_FILTERS[feedback])
    if channel is not None:
        if channel not in Channel.values:
            raise _option_invalid("channel", f"'channel' must be one of: {', '.join(Channel.values)}.")
        predictions = predictions.filter(channel=channel)
    if created_after is not None:
        if not isinstance(created_after, dt.datetime):
            created_after = _day_start(created_after)
        predictions = predictions.filter(created_at__gte=created_after)
    if created_before is not None:
        if not isinstance(created_before, dt.datetime):
            created_before = _day_start(created_before + dt.timedelta(days=1))
        predictions = predictions.filter(created_at__lt=created_before)
    return predictions.order_by("-created_at", "-id")


def prediction_get(*, user: Any, prediction_id: int) -> Prediction:
    """One prediction `user` may see; else Http404, so guessing ids of others' predictions reveals nothing."""
    found = prediction_list(user=user).select_related("batch_job").filter(pk=prediction_id).first()
    if found is None:
        raise Http404("No such prediction.")
    return found


def model_name_list() -> list[str]:
    """The name of every registered model with a version (only those can have predictions), for the
    history filter."""
    return list(
        RegisteredModel.objects.filter(Exists(ModelVersion.objects.filter(registered_model=OuterRef("pk"))))
        .order_by("name")
        .values_list("name", flat=True)
    )


def batch_job_list(*, user: Any) -> QuerySet[BatchPredictionJob]:
    """The batch jobs `user` may see (their own; staff: everyone's), newest first."""
    jobs = BatchPredictionJob.objects.select_related("model_version__registered_model", "user").defer(
        *registry_selectors.version_heavy_fields("model_version")
    )
    if not user.is_staff:
        jobs = jobs.filter(user=user)
    return jobs.order_by("-created_at", "-id")


def batch_job_get(*, user: Any, job_uuid: Any) -> BatchPredictionJob:
    """One batch job `user` may see; else Http404, so another user's job looks like no job at all."""
    try:
        job_uuid = uuid.UUID(str(job_uuid))
    except ValueError:
        raise Http404("No such batch job.") from None
    found = batch_job_list(user=user).filter(uuid=job_uuid).first()
    if found is None:
        raise Http404("No such batch job.")
    return found


def model_versions_servable(*, registered_model_name: str) -> list[ModelVersion]:
    """The versions of a model, newest first, for pinning one in the batch upload form."""
    return list(
        ModelVersion.objects.select_related("registered_model")
        .filter(registered_model__name=registered_model_name)
        .order_by("-version")
    )


def registered_model_exists(*, name: str) -> bool:
    return RegisteredModel.objects.filter(name=name).exists()


def version_predictor(*, version: ModelVersion) -> Any:
    """The version's loaded model (ml.predictor), from the same bounded cache the predictions use."""
    from predictions import model_cache

    return model_cache.predictors.get(model_cache.ModelArtifacts.of_version(version))
