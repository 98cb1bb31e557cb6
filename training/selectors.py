"""Reads for the training pages, API and admin: runs with what they display pre-joined."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from django.http import Http404

from models_registry.models import RegisteredModel
from predictions.models import Prediction
from training.models import DemoModel, Retraining, RetrainingEvent, RetrainingPolicy, TrainingRun


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


#: Events the model page's retraining panel lists.
PANEL_EVENTS = 10


def retraining_panel(*, registered_model: RegisteredModel) -> dict[str, Any]:
    """What the model page shows of the loop: the policy (None until one is saved: off), the latest
    retraining, why it was held back, and the newest events; three queries."""
    policy = RetrainingPolicy.objects.filter(registered_model=registered_model).first()
    latest = retraining_list(registered_model=registered_model).first()
    events = list(retraining_event_list(registered_model=registered_model)[:PANEL_EVENTS])
    why_held_back = None
    if latest is not None and latest.decision == Retraining.Decision.HELD_BACK:
        found = [
            e for e in events if e.retraining_id == latest.pk and e.kind == RetrainingEvent.Kind.HELD_BACK
        ]
        if found:
            why_held_back = found[0].message
        else:
            why_held_back = (
                RetrainingEvent.objects.filter(retraining=latest, kind=RetrainingEvent.Kind.HELD_BACK)
                .values_list("message", flat=True)
                .first()
            )
    return {"policy": policy, "latest": latest, "why_held_back": why_held_back, "events": events}


def demo_model_current() -> DemoModel | None:
    """The site's demo model record while the demo model is there (trained and not removed)."""
    return (
        DemoModel.objects.filter(removed_at__isnull=True, registered_model__isnull=False)
        .select_related("registered_model")
        .first()
    )


def demo_model_footprint(demo: DemoModel) -> dict[str, int]:
    """What removing the demo takes with it: its versions and the predictions made with them."""
    versions = demo.registered_model.versions.count() if demo.registered_model else 0
    predictions = Prediction.objects.filter(model_version__registered_model=demo.registered_model).count()
    return {"version_count": versions, "prediction_count": predictions}
