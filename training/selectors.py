"""Reads for the training pages, API and admin: runs with what they display pre-joined."""

from __future__ import annotations

from django.db.models import QuerySet
from django.http import Http404

from models_registry.models import RegisteredModel
from training.models import Retraining, RetrainingEvent, TrainingRun


def training_run_list() -> QuerySet[TrainingRun]:
    return TrainingRun.objects.select_related(
        "dataset_version__dataset", "registered_model", "created_by", "model_version"
    ).order_by("-created_at", "-id")


def training_run_get(*, run_id: int) -> TrainingRun:
    found = training_run_list().filter(pk=run_id).first()
    if found is None:
        raise Http404(f"No training run {run_id}.")
    return found


def retraining_list(*, registered_model: RegisteredModel) -> QuerySet[Retraining]:
    return (
        Retraining.objects.filter(registered_model=registered_model)
        .select_related(
            "registered_model", "champion", "challenger", "dataset_version__dataset", "requested_by"
        )
        .order_by("-created_at", "-id")
    )


def retraining_get(*, retraining_id: int) -> Retraining:
    found = (
        Retraining.objects.select_related(
            "registered_model", "champion", "challenger", "dataset_version__dataset", "requested_by"
        )
        .filter(pk=retraining_id)
        .first()
    )
    if found is None:
        raise Http404("No such retraining.")
    return found


def retraining_event_list(*, registered_model: RegisteredModel) -> QuerySet[RetrainingEvent]:
    return RetrainingEvent.objects.filter(registered_model=registered_model).order_by("-created_at", "-id")
