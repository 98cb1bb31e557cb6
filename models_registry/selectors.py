"""Reads for the registry pages, API and admin: models, versions, transitions, pre-joined; the champion,
the challenger and their paired comparison."""

from __future__ import annotations

import datetime as dt
import math
import statistics
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from django.db.models import Count, Exists, Max, OuterRef, Q, QuerySet, Subquery
from django.http import Http404
from django.utils import timezone

from feedback import selectors as feedback_selectors
from ml import compare
from ml.compare import PairedComparison
from ml.examples import ExampleRow, typical_row
from models_registry.models import ModelVersion, RegisteredModel, Stage, StageTransition, Task
from predictions.models import ShadowPrediction
from training.models import DemoModel


def registered_model_list() -> QuerySet[RegisteredModel]:
    """Models with their version count, latest and production version numbers and last registration time."""
    production = ModelVersion.objects.filter(registered_model=OuterRef("pk"), stage=Stage.PRODUCTION)
    demo = DemoModel.objects.filter(registered_model=OuterRef("pk"), removed_at__isnull=True)
    return (
        RegisteredModel.objects.select_related("created_by")
        .annotate(
            version_count=Count("versions"),
            latest_version=Max("versions__version"),
            staging_count=Count("versions", filter=Q(versions__stage=Stage.STAGING)),
            updated_at=Max("versions__created_at"),
            production_version=Subquery(production.values("version")[:1]),
            # The site's demo model (trained on the first start), which staff may remove whole.
            is_demo=Exists(demo),
        )
        .order_by("name")
    )


def registered_model_get(*, name: str) -> RegisteredModel:
    found = registered_model_list().filter(name=name).first()
    if found is None:
        raise Http404(f"No registered model named {name!r}.")
    return found


def version_heavy_fields(path: str) -> tuple[str, ...]:
    """The version's JSON that a list of its predictions or jobs never shows, as `defer()` names under
    `path` (as "model_version"): decoding its metrics (with their figures) and drift profile for every
    row was most of a history page's time."""
    return tuple(
        f"{path}__{name}"
        for name in (
            "metrics",
            "artifacts",
            "training_summary",
            "reference_profile",
            "params",
            "example_rows",
        )
    )


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


# ------------------------------------------------------------------------------
# Champion and challenger
# ------------------------------------------------------------------------------
#: Labelled rows the paired comparison reads by default (the newest), so a page costs the same at any size.
CHALLENGER_COMPARISON_LAST_N = 5000
#: The comparison calls a difference significant below this p-value.
CHALLENGER_ALPHA = 0.05


def champion_of(registered_model: RegisteredModel) -> ModelVersion | None:
    """The production version, or None."""
    return (
        ModelVersion.objects.select_related("registered_model")
        .filter(registered_model_id=registered_model.pk, stage=Stage.PRODUCTION)
        .first()
    )


def challenger_of(registered_model: RegisteredModel) -> ModelVersion | None:
    """The challenger: the newest staging version (the one `stage=staging` predicts with), or None."""
    return (
        ModelVersion.objects.select_related("registered_model")
        .filter(registered_model_id=registered_model.pk, stage=Stage.STAGING)
        .order_by("-version")
        .first()
    )


def challenger_staged_at(challenger: ModelVersion) -> dt.datetime:
    """When the version last went to staging (its creation, when it never moved there by a transition)."""
    moved = (
        StageTransition.objects.filter(model_version=challenger, to_stage=Stage.STAGING)
        .order_by("-created_at", "-id")
        .values_list("created_at", flat=True)
        .first()
    )
    return moved or challenger.created_at


def challenger_start(*, registered_model: RegisteredModel, challenger: ModelVersion) -> dt.datetime:
    """From when the challenger takes part: the later of the mode's start and its move to staging.

    A challenger that replaced another while the mode stayed on starts afresh, not at the mode's start.
    """
    staged = challenger_staged_at(challenger)
    since = registered_model.challenger_since
    return staged if since is None else max(since, staged)


@dataclass(frozen=True)
class ChallengerComparison:
    """The paired comparison of champion and challenger on the rows both scored that have an outcome.

    `days` is the time series for the chart, oldest first: per day of prediction the shared rows `n` and
    each one's score (accuracy, or mean absolute error for regression) with its 95% interval (Wilson's
    for accuracy, the normal one for the mean error). `excluded_unknown_class` counts outcomes marked
    wrong without the true class: the champion was wrong there, but whether the challenger was is unknown,
    so they are not paired.
    """

    task: str
    paired: PairedComparison
    days: list[dict[str, Any]]
    excluded_unknown_class: int = 0

    @property
    def significant(self) -> bool:
        return self.paired.p_value is not None and self.paired.p_value < CHALLENGER_ALPHA

    @property
    def sentence(self) -> str:
        """What the page says about the difference."""
        p_value = self.paired.p_value
        if p_value is None:
            return "No shared rows with an outcome yet."
        test = "McNemar" if self.paired.test == "mcnemar" else "Wilcoxon"
        verdict = "significant" if self.significant else "not significant"
        return f"The difference is {verdict} (p = {p_value:.3g}, {test}, {self.paired.n} shared rows)."

    def as_dict(self) -> dict[str, Any]:
        return {
            **self.paired.as_dict(),
            "task": self.task,
            "alpha": CHALLENGER_ALPHA,
            "significant": self.significant,
            "summary": self.sentence,
            "excluded_unknown_class": self.excluded_unknown_class,
            "days": self.days,
        }


def _normal_interval(values: list[float]) -> tuple[float, float] | None:
    if len(values) < 2:
        return None
    mean = statistics.fmean(values)
    half = feedback_selectors.quality.Z_95 * statistics.stdev(values) / math.sqrt(len(values))
    return max(0.0, mean - half), mean + half


def _day_figures(task: str, rows: list[tuple[dt.date, float, float]]) -> list[dict[str, Any]]:
    """Per day: the shared rows and both scores with their intervals; rows are (day, champion, challenger)
    with 1/0 for right/wrong or the absolute errors."""
    by_day: dict[dt.date, list[tuple[float, float]]] = defaultdict(list)
    for day, champion, challenger in rows:
        by_day[day].append((champion, challenger))
    days = []
    for day in sorted(by_day):
        pairs = by_day[day]
        n = len(pairs)
        figure: dict[str, Any] = {"day": day.isoformat(), "n": n}
        for side, position in (("champion", 0), ("challenger", 1)):
            values = [pair[position] for pair in pairs]
            if task == Task.REGRESSION:
                interval = _normal_interval(values)
            else:
                interval = feedback_selectors.quality.wilson_interval(int(sum(values)), n)
            figure[side] = statistics.fmean(values)
            figure[f"{side}_low"], figure[f"{side}_high"] = interval if interval else (None, None)
        days.append(figure)
    return days


def challenger_comparison(
    *,
    registered_model: RegisteredModel,
    champion: ModelVersion,
    challenger: ModelVersion,
    since: dt.datetime | None = None,
    last_n: int | None = None,
) -> ChallengerComparison:
    """Champion against challenger on the newest `last_n` production predictions that the challenger
    scored in shadow and that have an outcome, predicted at or after `since`.

    Classification: each is right when its class is the true one (McNemar's test on the pairs); outcomes
    marked wrong without the true class are left out. Regression: absolute errors against the observed
    value (Wilcoxon's signed-rank test); outcomes without a value are left out. One query, walking the
    challenger's shadow rows newest first by their index and joining each one's outcome by its unique key.
    """
    last_n = CHALLENGER_COMPARISON_LAST_N if last_n is None else last_n
    shadows = ShadowPrediction.objects.filter(
        model_version=challenger, champion=champion, prediction__feedback__isnull=False
    )
    if since is not None:
        shadows = shadows.filter(prediction_created_at__gte=since)
    rows = list(
        shadows.order_by("-prediction_id").values_list(
            "prediction_created_at",
            "prediction_value",
            "prediction__feedback__predicted_label",
            "prediction__feedback__predicted_value",
            "prediction__feedback__true_label",
            "prediction__feedback__true_value",
        )[:last_n]
    )
    task = challenger.task or registered_model.task
    unknown = 0
    pairs: list[tuple[dt.date, float, float]] = []
    for made_at, shadow_value, predicted_label, predicted_value, true_label, true_value in rows:
        day = timezone.localtime(made_at).date()
        if task == Task.REGRESSION:
            if true_value is None or predicted_value is None or shadow_value is None:
                continue
            pairs.append((day, abs(predicted_value - true_value), abs(float(shadow_value) - true_value)))
        elif not true_label:
            unknown += 1
        else:
            champion_right = float(predicted_label == true_label)
            challenger_right = float(feedback_selectors.label_text(shadow_value) == true_label)
            pairs.append((day, champion_right, challenger_right))
    if task == Task.REGRESSION:
        paired = compare.regression_compare(
            champion_errors=[p[1] for p in pairs], challenger_errors=[p[2] for p in pairs]
        )
    else:
        paired = compare.classification_compare(
            champion_right=[bool(p[1]) for p in pairs], challenger_right=[bool(p[2]) for p in pairs]
        )
    return ChallengerComparison(
        task=task, paired=paired, days=_day_figures(task, pairs), excluded_unknown_class=unknown
    )


@dataclass(frozen=True)
class ChallengerState:
    """What the model page and the API show: the mode, both versions, their paired comparison (None
    without a champion and a challenger) and each one's own live quality (the canary's rows count there)."""

    registered_model: RegisteredModel
    champion: ModelVersion | None
    challenger: ModelVersion | None
    comparison: ChallengerComparison | None
    live: dict[str, dict[str, Any] | None]

    @property
    def mode(self) -> str:
        return self.registered_model.challenger_mode

    @property
    def canary_percent(self) -> int:
        return self.registered_model.canary_percent

    @property
    def since(self) -> dt.datetime | None:
        return self.registered_model.challenger_since

    @property
    def active(self) -> bool:
        """Whether the mode is on and has both versions to work with."""
        return self.mode != "off" and self.champion is not None and self.challenger is not None


def challenger_state(
    *,
    registered_model: RegisteredModel,
    versions: list[ModelVersion] | None = None,
    live: bool = True,
    last_n: int | None = None,
) -> ChallengerState:
    """The challenger panel's figures. `versions`: the model's versions when the caller has them already (the
    model page), saving their queries; `live=False` leaves out each one's live quality (the page shows it in
    its own section)."""
    if versions is None:
        champion, challenger = champion_of(registered_model), challenger_of(registered_model)
    else:
        champion = next((v for v in versions if v.stage == Stage.PRODUCTION), None)
        challenger = max(
            (v for v in versions if v.stage == Stage.STAGING), key=lambda v: v.version, default=None
        )
    comparison = None
    if champion is not None and challenger is not None:
        comparison = challenger_comparison(
            registered_model=registered_model, champion=champion, challenger=challenger, last_n=last_n
        )
    figures: dict[str, dict[str, Any] | None] = {"champion": None, "challenger": None}
    if live:
        figures = {
            side: feedback_selectors.version_quality(version=version)["live"] if version is not None else None
            for side, version in (("champion", champion), ("challenger", challenger))
        }
    return ChallengerState(
        registered_model=registered_model,
        champion=champion,
        challenger=challenger,
        comparison=comparison,
        live=figures,
    )


def version_examples(version: ModelVersion) -> list[ExampleRow]:
    """The rows the predict form offers: the version's holdout examples, else one typical row of its
    reference profile, else none."""
    if version.example_rows:
        return list(version.example_rows)
    typical = typical_row(version.reference_profile)
    return [] if typical is None else [typical]
