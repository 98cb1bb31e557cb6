"""Reads for the registry pages, API and admin: models, versions, transitions, pre-joined."""

from __future__ import annotations

from django.db.models import Count, Max, OuterRef, Q, QuerySet, Subquery
from django.http import Http404

from models_registry.models import ModelVersion, RegisteredModel, Stage, StageTransition


def registered_model_list() -> QuerySet[RegisteredModel]:
    """Models with their version count, latest and production version numbers and last registration time."""
    production = ModelVersion.objects.filter(registered_model=OuterRef("pk"), stage=Stage.PRODUCTION)
    return (
        RegisteredModel.objects.select_related("created_by")
        .annotate(
            version_count=Count("versions"),
            latest_version=Max("versions__version"),
            staging_count=Count("versions", filter=Q(versions__stage=Stage.STAGING)),
            updated_at=Max("versions__created_at"),
            production_version=Subquery(production.values("version")[:1]),
        )
        .order_by("name")
    )


def registered_model_get(*, name: str) -> RegisteredModel:
    found = registered_model_list().filter(name=name).first()
    if found is None:
        raise Http404(f"No registered model named {name!r}.")
    return found


def model_version_list(*, model_name: str | None = None) -> QuerySet[ModelVersion]:
    versions = ModelVersion.objects.select_related(
        "registered_model", "dataset_version__dataset", "training_run", "created_by"
    )
    if model_name is not None:
        versions = versions.filter(registered_model__name=model_name)
    return versions.order_by("registered_model__name", "-version")


def model_version_get(*, model_name: str, version: int) -> ModelVersion:
    found = model_version_list(model_name=model_name).filter(version=version).first()
    if found is None:
        raise Http404(f"Model {model_name!r} has no version {version}.")
    return found


def stage_transition_list(
    *, model_version: ModelVersion | None = None, registered_model: RegisteredModel | None = None
) -> QuerySet[StageTransition]:
    transitions = StageTransition.objects.select_related("model_version__registered_model", "user")
    if model_version is not None:
        transitions = transitions.filter(model_version=model_version)
    if registered_model is not None:
        transitions = transitions.filter(model_version__registered_model=registered_model)
    return transitions.order_by("-created_at", "-id")
