"""Reads for one model's monitoring page: volume, live quality, coverage, feedback delay, latency, drift
and the estimated score per version and bucket over a period, from the hourly rollups in a fixed number of
queries (see monitoring.page_selectors)."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from django.db.models import Sum
from django.db.models.functions import Trunc
from django.http import Http404
from django.utils import timezone

from feedback import selectors as feedback_selectors
from feedback.models import DelayHourly, QualityHourly
from models_registry import selectors as registry_selectors
from models_registry.models import ModelVersion, RegisteredModel, Stage, Task
from monitoring import page_drift
from monitoring.page_selectors import (
    PERIOD,
    PERIODS,
    VERSION_FIELDS,
    Latency,
    Score,
    bucket_start,
    latency_percentiles,
    metric_of,
    period_check,
    score_of,
)
from predictions.models import PredictionHourly
from training.models import Retraining, RetrainingPolicy


@dataclass
class VersionSeries:
    """One version's points over the period: predictions, labelled, live score and coverage per bucket."""

    version: ModelVersion
    predicted: list[int]
    labelled: list[int]
    scores: list[float | None]
    score: Score | None = None
    drift: dict[str, Any] | None = None  # page_drift.drift_and_estimates' figures
    estimated: dict[str, Any] | None = None  # page_drift.drift_and_estimates' figures
    latency: Latency | None = None


@dataclass
class ModelMonitoring:
    model: RegisteredModel
    period: str
    bucket: str
    since: dt.datetime
    buckets: list[dt.datetime]
    metric: str
    policy: RetrainingPolicy | None
    series: list[VersionSeries]
    coverage: list[float | None]
    delay_bins: list[tuple[str, int]]
    delay_median_seconds: float | None
    last_retraining: Retraining | None
    challenger: Any  # models_registry.selectors.ChallengerState

    @property
    def drift_measured(self) -> bool:
        return any(s.drift for s in self.series)

    @property
    def latency_any(self) -> bool:
        return any(s.latency for s in self.series)

    @property
    def estimated_any(self) -> bool:
        return any(s.estimated for s in self.series)

    @property
    def production(self) -> ModelVersion | None:
        return next((s.version for s in self.series if s.version.stage == Stage.PRODUCTION), None)


def _delay_label(index: int) -> str:
    edges = feedback_selectors.quality.DELAY_EDGES

    def text(seconds: int) -> str:
        for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
            if seconds >= size and seconds % size == 0:
                return f"{seconds // size} {unit}"
        return f"{seconds} s"

    if index + 1 < len(edges):
        return f"{text(edges[index])} to {text(edges[index + 1])}"
    return f"≥ {text(edges[index])}"


def _bucket_figures(version: ModelVersion, cells: dict[tuple[str, str], list[float]]) -> dict[str, Any]:
    quality = feedback_selectors.quality
    if version.task == Task.REGRESSION:
        return quality.regression_figures(
            int(sum(v[0] for v in cells.values())),
            sum(v[1] for v in cells.values()),
            sum(v[2] for v in cells.values()),
        )
    labels = [feedback_selectors.label_text(c) for c in (version.classes or [])]
    return quality.classification_figures({k: int(v[0]) for k, v in cells.items() if v[0]}, labels)


def model_monitoring_get(
    *, name: str, period: str = PERIOD, now: dt.datetime | None = None
) -> ModelMonitoring:
    """One model's monitoring panels over `period` from the rollups; Http404 for an unknown model."""
    period = period_check(period)
    now = now or timezone.now()
    model = RegisteredModel.objects.filter(name=name).first()
    if model is None:
        raise Http404(f"No registered model named {name!r}.")
    days, bucket = PERIODS[period]
    end = bucket_start(now, bucket)
    step = dt.timedelta(days=1) if bucket == "day" else dt.timedelta(hours=1)
    count = days if bucket == "day" else days * 24
    since = end - step * (count - 1)
    buckets = [since + step * i for i in range(count)]
    position = {b: i for i, b in enumerate(buckets)}

    versions = list(
        ModelVersion.objects.filter(registered_model=model)
        .only(*VERSION_FIELDS, "created_at")
        .order_by("-version")
    )
    ids = [v.pk for v in versions]
    policy = RetrainingPolicy.objects.filter(registered_model=model).first()
    truncated = Trunc("hour", bucket, tzinfo=dt.UTC)

    predicted: dict[int, list[int]] = {pk: [0] * count for pk in ids}
    for version_id, at, n in (
        PredictionHourly.objects.filter(model_version_id__in=ids, hour__gte=since)
        .annotate(bucket=truncated)
        .values("model_version_id", "bucket")
        .annotate(total=Sum("n"))
        .values_list("model_version_id", "bucket", "total")
    ):
        index = position.get(bucket_start(at, bucket))
        if index is not None:
            predicted[version_id][index] += int(n or 0)

    cells: dict[int, list[dict[tuple[str, str], list[float]]]] = {pk: [{} for _ in buckets] for pk in ids}
    for version_id, at, p, a, n, abs_error, sq_error in (
        QualityHourly.objects.filter(model_version_id__in=ids, hour__gte=since)
        .annotate(bucket=truncated)
        .values("model_version_id", "bucket", "predicted", "actual")
        .annotate(total=Sum("n"), abs_error=Sum("sum_abs_error"), sq_error=Sum("sum_sq_error"))
        .values_list("model_version_id", "bucket", "predicted", "actual", "total", "abs_error", "sq_error")
    ):
        index = position.get(bucket_start(at, bucket))
        if index is not None and n:
            cell = cells[version_id][index].setdefault((p, a), [0, 0.0, 0.0])
            cell[0] += n
            cell[1] += abs_error or 0.0
            cell[2] += sq_error or 0.0

    delays: dict[int, int] = defaultdict(int)
    for index, n in (
        DelayHourly.objects.filter(model_version_id__in=ids, hour__gte=since)
        .values("bin")
        .annotate(total=Sum("n"))
        .values_list("bin", "total")
    ):
        delays[index] += int(n or 0)

    latencies = latency_percentiles(ids=ids, since=since, bucket=bucket, position=position)
    drift, estimates = page_drift.drift_and_estimates(versions=versions)
    metric = metric_of(model.task or (versions[0].task if versions else ""), policy)
    series = []
    for version in versions:
        per_bucket = cells[version.pk]
        figures = [_bucket_figures(version, c) if c else None for c in per_bucket]
        total: dict[tuple[str, str], list[float]] = {}
        for bucket_cells in per_bucket:
            for key, (n, abs_error, sq_error) in bucket_cells.items():
                cell = total.setdefault(key, [0, 0.0, 0.0])
                cell[0] += n
                cell[1] += abs_error
                cell[2] += sq_error
        labelled = [int(sum(v[0] for v in c.values())) for c in per_bucket]
        nothing = not any(predicted[version.pk]) and not any(labelled) and version.pk not in latencies
        if nothing and version.stage != Stage.PRODUCTION:
            continue  # a version with nothing in the period draws no line
        series.append(
            VersionSeries(
                version=version,
                predicted=predicted[version.pk],
                labelled=labelled,
                scores=[f.get(metric) if f else None for f in figures],
                score=score_of(version, _bucket_figures(version, total), policy) if total else None,
                drift=drift.get(version.pk),
                estimated=estimates.get(version.pk),
                latency=latencies.get(version.pk),
            )
        )
    made = [sum(s.predicted[i] for s in series) for i in range(count)]
    got = [sum(s.labelled[i] for s in series) for i in range(count)]
    coverage = [g / m if m else None for g, m in zip(got, made, strict=True)]

    last = (
        Retraining.objects.filter(registered_model=model)
        .select_related("champion", "challenger")
        .order_by("-created_at", "-id")
        .first()
    )
    challenger = registry_selectors.challenger_state(registered_model=model, versions=versions, live=False)
    return ModelMonitoring(
        model=model,
        period=period,
        bucket=bucket,
        since=since,
        buckets=buckets,
        metric=metric,
        policy=policy,
        series=series,
        coverage=coverage,
        delay_bins=[
            (_delay_label(i), delays.get(i, 0)) for i in range(len(feedback_selectors.quality.DELAY_EDGES))
        ],
        delay_median_seconds=feedback_selectors.quality.delay_median(delays),
        last_retraining=last,
        challenger=challenger,
    )
