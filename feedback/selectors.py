"""Reads for feedback: live quality per model version from the hourly rollups, a prediction's outcome and
its history, and the label queue."""

from __future__ import annotations

import datetime as dt
import uuid
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db.models import F, QuerySet, Sum
from django.http import Http404
from django.utils import timezone

from feedback import quality
from feedback.checks import label_text
from feedback.models import DelayHourly, Feedback, FeedbackImport, QualityHourly
from mlops_site import rollups
from mlops_site.errors import Invalid, problem
from models_registry import selectors as registry_selectors
from models_registry.models import ModelVersion, RegisteredModel, Stage, Task
from predictions.models import Prediction, PredictionHourly, ShadowPrediction

#: Live-quality windows: every labelled prediction, the last N labelled, predictions of the last day or week.
WINDOWS = ("all", "last", "24h", "7d")
_WINDOW_HOURS = {"24h": 24, "7d": 7 * 24}
#: Holdout metrics shown beside their live counterparts.
LIVE_METRICS = {Task.CLASSIFICATION: ("accuracy", "f1_macro"), Task.REGRESSION: ("mae", "rmse")}
LAST_N_MAX = 10_000
_QUALITY_VERSION_FIELDS = ("pk", "registered_model_id", "version", "stage", "task", "classes", "metrics")


def window_check(window: Any, last_n: Any = None) -> tuple[str, int]:
    """The window and N (for "last") after checking them; raises Invalid naming the parameter."""
    if window in (None, ""):
        window = "all"
    if window not in WINDOWS:
        raise Invalid(
            f"Unknown window {str(window)[:40]!r}.",
            errors=[
                problem(
                    f"'window' must be one of: {', '.join(WINDOWS)}.", field="window", code="invalid_option"
                )
            ],
        )
    if last_n in (None, ""):
        return window, settings.FEEDBACK_LAST_N
    try:
        number = int(str(last_n))
    except ValueError:
        number = 0
    if not 1 <= number <= LAST_N_MAX:
        raise Invalid(
            "Invalid 'last'.",
            errors=[
                problem(
                    f"'last' must be a whole number from 1 to {LAST_N_MAX}.",
                    field="last",
                    code="invalid_option",
                )
            ],
        )
    return window, number


def _since(window: str, now: dt.datetime) -> dt.datetime | None:
    hours = _WINDOW_HOURS.get(window)
    if hours is None:
        return None
    # Whole hours: the rollups' bucket. The window starts with the hour that holds now - 24 h.
    return rollups.hour_of(now - dt.timedelta(hours=hours))


def _figures(
    task: str,
    classes: list[Any] | None,
    cells: dict[tuple[str, str], list[float]],
) -> dict[str, Any]:
    if task == Task.REGRESSION:
        n = sum(int(v[0]) for v in cells.values())
        return quality.regression_figures(
            n, sum(v[1] for v in cells.values()), sum(v[2] for v in cells.values())
        )
    counts = {key: int(v[0]) for key, v in cells.items() if v[0]}
    labels = [label_text(c) for c in (classes or [])]
    return quality.classification_figures(counts, labels)


def _outcome_rows(version: ModelVersion, *, newest: bool, n: int) -> list[tuple[Any, ...]]:
    order = ("-prediction_created_at", "-id") if newest else ("prediction_created_at", "id")
    return list(
        Feedback.objects.filter(model_version=version)
        .order_by(*order)
        .values_list(
            "predicted_label",
            "predicted_value",
            "true_label",
            "true_value",
            "created_at",
            "prediction_created_at",
        )[:n]
    )


def _row_cells(version: ModelVersion, rows: list[tuple[Any, ...]]) -> dict[tuple[str, str], list[float]]:
    cells: dict[tuple[str, str], list[float]] = {}
    for predicted_label, predicted_value, true_label, true_value, _, _ in rows:
        if version.task == Task.REGRESSION:
            error = float(true_value) - float(predicted_value)
            cell = cells.setdefault(("", ""), [0, 0.0, 0.0])
            cell[0] += 1
            cell[1] += abs(error)
            cell[2] += error * error
        else:
            cells.setdefault((predicted_label, true_label), [0, 0.0, 0.0])[0] += 1
    return cells


def _shadow_outcome_rows(version: ModelVersion, *, n: int) -> list[tuple[Any, ...]]:
    """The newest `n` labelled rows the version scored in shadow, shaped like _outcome_rows' rows."""
    rows = (
        ShadowPrediction.objects.filter(model_version=version, prediction__feedback__isnull=False)
        .order_by("-prediction_id")
        .values_list(
            "prediction_value",
            "prediction__feedback__true_label",
            "prediction__feedback__true_value",
            "prediction__feedback__created_at",
            "prediction_created_at",
        )[:n]
    )
    answer = []
    for value, true_label, true_value, created_at, made_at in rows:
        if version.task == Task.REGRESSION:
            if value is None or true_value is None:
                continue
            answer.append(("", float(value), true_label, true_value, created_at, made_at))
        elif true_label:
            answer.append((label_text(value), None, true_label, true_value, created_at, made_at))
    return answer


def version_answers_quality(*, version: ModelVersion, last_n: int) -> dict[str, Any]:
    """Live figures of a version over its newest `last_n` labelled answers, served or scored in shadow.

    A champion promoted from shadow has answered live traffic before it served any: those answers, with
    their outcomes, judge it from its first minute, where its served ones alone would need `last_n` new
    outcomes first. Outcomes "wrong" without the true class are left out of its shadow rows, as the
    paired comparison leaves them out.
    """
    served = _outcome_rows(version, newest=True, n=last_n)
    shadowed = _shadow_outcome_rows(version, n=last_n)
    rows = sorted([*served, *shadowed], key=lambda row: row[5], reverse=True)[:last_n]
    figures = _figures(version.task, version.classes, _row_cells(version, rows))
    return {
        **figures,
        "coverage": None,
        "label_delay_median_seconds": quality.exact_median(
            max(0.0, (created - made).total_seconds()) for *_, created, made in rows
        ),
    }


def version_first_quality(*, version: ModelVersion, first_n: int) -> dict[str, Any]:
    """Live figures of a version over its first `first_n` labelled predictions (a new champion's watch)."""
    return versions_quality([version], window="first", last_n=first_n, now=timezone.now())[version.pk]


@dataclass(frozen=True)
class LabelledRow:
    """A labelled prediction as a training row: its inputs and the true outcome."""

    feedback_id: int
    inputs: dict[str, Any]
    target: Any
    prediction_created_at: dt.datetime
    labelled_at: dt.datetime


def labelled_rows(*, registered_model: RegisteredModel, limit: int) -> list[LabelledRow]:
    """The newest `limit` outcomes of the model's predictions that name the true outcome, oldest first.

    Left out: "wrong" without the true class (nothing to learn) and batch rows, whose inputs stay in the
    batch job's file.
    """
    outcomes = (
        Feedback.objects.filter(model_version__registered_model=registered_model)
        .exclude(true_label="", true_value__isnull=True)
        .exclude(prediction__inputs={})
        .order_by("-prediction_created_at", "-id")
        .values_list(
            "id", "prediction__inputs", "true_label", "true_value", "prediction_created_at", "updated_at"
        )
    )[:limit]
    rows = [
        LabelledRow(
            feedback_id=feedback_id,
            inputs=inputs,
            target=true_value if true_value is not None else true_label,
            prediction_created_at=made,
            labelled_at=labelled,
        )
        for feedback_id, inputs, true_label, true_value, made, labelled in outcomes
    ]
    rows.reverse()
    return rows


def versions_quality(
    versions: list[ModelVersion], *, window: str, last_n: int, now: dt.datetime
) -> dict[int, dict[str, Any]]:
    """Live figures of each version: a few grouped reads of the rollups for all versions at once."""
    ids = [v.pk for v in versions]
    cells: dict[int, dict[tuple[str, str], list[float]]] = defaultdict(dict)
    predicted: dict[int, int] = {}
    delays: dict[int, dict[int, int]] = defaultdict(dict)
    exact_delay: dict[int, float | None] = {}
    if window in ("last", "first"):
        for version in versions:
            rows = _outcome_rows(version, newest=window == "last", n=last_n)
            cells[version.pk] = _row_cells(version, rows)
            exact_delay[version.pk] = quality.exact_median(
                max(0.0, (created - made).total_seconds()) for *_, created, made in rows
            )
    else:
        since = _since(window, now)
        rollup = QualityHourly.objects.filter(model_version_id__in=ids)
        volume = PredictionHourly.objects.filter(model_version_id__in=ids)
        delay_rows = DelayHourly.objects.filter(model_version_id__in=ids)
        if since is not None:
            rollup = rollup.filter(hour__gte=since)
            volume = volume.filter(hour__gte=since)
            delay_rows = delay_rows.filter(hour__gte=since)
        for version_id, p, a, n, abs_error, sq_error in (
            rollup.values("model_version_id", "predicted", "actual")
            .annotate(total=Sum("n"), abs_error=Sum("sum_abs_error"), sq_error=Sum("sum_sq_error"))
            .values_list("model_version_id", "predicted", "actual", "total", "abs_error", "sq_error")
        ):
            if n:
                cells[version_id][(p, a)] = [n, abs_error or 0.0, sq_error or 0.0]
        for version_id, total in (
            volume.values("model_version_id")
            .annotate(total=Sum("n"))
            .values_list("model_version_id", "total")
        ):
            predicted[version_id] = int(total or 0)
        for version_id, index, total in (
            delay_rows.values("model_version_id", "bin")
            .annotate(total=Sum("n"))
            .values_list("model_version_id", "bin", "total")
        ):
            delays[version_id][index] = int(total or 0)
    answer = {}
    for version in versions:
        figures = _figures(version.task, version.classes, cells.get(version.pk, {}))
        labelled = figures["n"]
        if window == "last":
            coverage = None
            delay = exact_delay.get(version.pk)
        else:
            made = predicted.get(version.pk, 0)
            coverage = {"labelled": labelled, "predicted": made, "ratio": labelled / made if made else None}
            delay = quality.delay_median(delays.get(version.pk, {}))
        answer[version.pk] = {
            **figures,
            "coverage": coverage,
            "label_delay_median_seconds": delay,
        }
    return answer


def _holdout(version: ModelVersion) -> dict[str, Any]:
    return {name: version.metrics.get(name) for name in LIVE_METRICS.get(version.task, ())}


def version_quality(
    *, version: ModelVersion, window: str = "all", last_n: int | None = None, now: dt.datetime | None = None
) -> dict[str, Any]:
    """Live quality of one version over a window (see WINDOWS), beside its holdout metrics."""
    window, n = window_check(window, last_n)
    live = versions_quality([version], window=window, last_n=n, now=now or timezone.now())[version.pk]
    return {
        "version": version.version,
        "stage": version.stage,
        "task": version.task,
        "window": window,
        "last_n": n if window == "last" else None,
        "holdout": _holdout(version),
        "live": live,
    }


def model_quality(
    *,
    registered_model: RegisteredModel,
    window: str = "all",
    last_n: int | None = None,
    now: dt.datetime | None = None,
    versions: list[ModelVersion] | None = None,
) -> list[dict[str, Any]]:
    """Live quality of every version of a model, newest first, in a handful of queries.

    `versions`: the model's versions when the caller has them already (a page that lists them), saving
    their query.
    """
    window, n = window_check(window, last_n)
    if versions is None:
        # Not the artifacts and summaries: kilobytes of JSON per version that no figure needs.
        versions = list(
            ModelVersion.objects.filter(registered_model=registered_model).only(*_QUALITY_VERSION_FIELDS)
        )
    versions = sorted(versions, key=lambda v: -v.version)
    figures = versions_quality(versions, window=window, last_n=n, now=now or timezone.now())
    return [
        {
            "version": v.version,
            "stage": v.stage,
            "task": v.task,
            "window": window,
            "last_n": n if window == "last" else None,
            "holdout": _holdout(v),
            "live": figures[v.pk],
        }
        for v in versions
    ]


def registered_model_named(*, name: str) -> RegisteredModel:
    """The model by its name alone (the registry's lookup also counts versions, which quality needs not)."""
    found = RegisteredModel.objects.filter(name=name).first()
    if found is None:
        raise Http404(f"No registered model named {name!r}.")
    return found


def feedback_of(*, prediction: Prediction) -> Feedback | None:
    """The outcome given for a prediction (with its history prefetched), or None."""
    return (
        Feedback.objects.select_related("labelled_by")
        .prefetch_related("changes__changed_by")
        .filter(prediction=prediction)
        .first()
    )


def label_queue(*, version: ModelVersion) -> QuerySet[Prediction]:
    """A version's predictions without an outcome, least confident first (an index walk on confidence)."""
    return (
        Prediction.objects.select_related("model_version__registered_model", "user")
        .defer(*registry_selectors.version_heavy_fields("model_version"))
        .filter(model_version=version, feedback__isnull=True)
        .order_by(F("confidence").asc(nulls_last=True), "-created_at", "-id")
    )


def label_queue_version(*, registered_model: RegisteredModel, version: Any = None) -> ModelVersion:
    """The version whose queue to show: the one asked for, else production, else the newest."""
    versions = ModelVersion.objects.select_related("registered_model").filter(
        registered_model=registered_model
    )
    if version not in (None, ""):
        try:
            number = int(str(version))
        except ValueError:
            raise Http404("No such version.") from None
        found = versions.filter(version=number).first()
    else:
        found = versions.filter(stage=Stage.PRODUCTION).first() or versions.order_by("-version").first()
    if found is None:
        raise Http404("No such version.")
    return found


def feedback_import_list(*, user: Any) -> QuerySet[FeedbackImport]:
    """Imports `user` may see (staff only upload them; each sees all), newest first."""
    imports = FeedbackImport.objects.select_related("user", "registered_model")
    if not user.is_staff:
        return imports.none()
    return imports.order_by("-created_at", "-id")


def feedback_import_get(*, user: Any, import_uuid: Any) -> FeedbackImport:
    try:
        key = uuid.UUID(str(import_uuid))
    except ValueError:
        raise Http404("No such import.") from None
    found = feedback_import_list(user=user).filter(uuid=key).first()
    if found is None:
        raise Http404("No such import.")
    return found


def labelled_count(*, registered_model: RegisteredModel) -> int:
    """Outcomes given on the model's predictions, all versions (the loop's minimum-labels guardrail)."""
    return Feedback.objects.filter(model_version__registered_model=registered_model).count()
