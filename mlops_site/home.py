"""What the home page shows each user, read through every app's selectors in a fixed number of queries."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.db.models import Count, QuerySet

from datasets import selectors as dataset_selectors
from models_registry import selectors as registry_selectors
from models_registry.models import ModelVersion, Stage
from predictions import selectors as prediction_selectors
from predictions.models import Prediction
from training import selectors as training_selectors
from training.models import TrainingRun

#: Predictions listed under "Your recent predictions".
RECENT_PREDICTIONS = 8
#: Predictions waiting for feedback that the page lists with their feedback form (the count covers all).
AWAITING_SHOWN = 5
#: Training runs listed on the staff card.
RECENT_RUNS = 5


@dataclass(frozen=True)
class LabelQueue:
    """A production version and how many of its predictions have no outcome yet."""

    version: ModelVersion
    unlabelled: int


@dataclass(frozen=True)
class StaffHome:
    model_count: int
    runs: list[TrainingRun]
    runs_active: int
    dataset_count: int
    label_queues: list[LabelQueue]


@dataclass(frozen=True)
class Home:
    production_versions: list[ModelVersion]
    recent: list[Prediction]
    awaiting: list[Prediction]
    awaiting_count: int
    #: None for users without staff status.
    staff: StaffHome | None


def _own_predictions(*, user: Any, feedback: str | None = None) -> QuerySet[Prediction]:
    # The selector shows staff everyone's predictions; the home page lists only the user's own.
    return prediction_selectors.prediction_list(user=user, feedback=feedback).filter(user=user)


def _label_queues(*, user: Any, versions: list[ModelVersion]) -> list[LabelQueue]:
    """Every production version with its unlabelled count (0 included), from one grouped query."""
    counts = dict(
        prediction_selectors.prediction_list(user=user, feedback="unlabelled")
        .filter(model_version__stage=Stage.PRODUCTION)
        # The selector's newest-first order would otherwise become part of the GROUP BY.
        .order_by()
        .values_list("model_version_id")
        .annotate(unlabelled=Count("id"))
    )
    return [LabelQueue(version=v, unlabelled=counts.get(v.pk, 0)) for v in versions]


def _staff_home(*, user: Any, production_versions: list[ModelVersion]) -> StaffHome:
    runs = training_selectors.training_run_list()
    return StaffHome(
        model_count=registry_selectors.registered_model_list().count(),
        runs=list(runs[:RECENT_RUNS]),
        runs_active=runs.exclude(status__in=TrainingRun.TERMINAL).count(),
        dataset_count=dataset_selectors.dataset_list().count(),
        label_queues=_label_queues(user=user, versions=production_versions),
    )


def home_get(*, user: Any) -> Home:
    """The home page of a signed-in user: four queries, and five more for staff, whatever the data size.

    Predictions listed are always the user's own, staff included.
    """
    production_versions = prediction_selectors.production_version_list()
    awaiting = _own_predictions(user=user, feedback="unlabelled")
    return Home(
        production_versions=production_versions,
        recent=list(_own_predictions(user=user)[:RECENT_PREDICTIONS]),
        awaiting=list(awaiting[:AWAITING_SHOWN]),
        awaiting_count=awaiting.count(),
        staff=_staff_home(user=user, production_versions=production_versions) if user.is_staff else None,
    )
