"""Reads for the training pages, API and admin: runs with what they display pre-joined."""

from __future__ import annotations

from django.db.models import QuerySet
from django.http import Http404

from training.models import TrainingRun


def training_run_list() -> QuerySet[TrainingRun]:
    return TrainingRun.objects.select_related(
        "dataset_version__dataset", "registered_model", "created_by", "model_version"
    ).order_by("-created_at", "-id")


def training_run_get(*, run_id: int) -> TrainingRun:
    found = training_run_list().filter(pk=run_id).first()
    if found is None:
        raise Http404(f"No training run {run_id}.")
    return found
