"""Reads for the monitoring pages: the overview's row per registered model and one model's panels.

Everything comes from the hourly rollups kept in the writers' transactions (predictions.PredictionHourly,
feedback.QualityHourly and feedback.DelayHourly), never from prediction rows, in a fixed number of queries
whatever the number of models, versions and rows:

- overview: models, production versions, policies, latest retraining, live quality (3, feedback's own
  reader), volume: 8 queries for 1 model or 500;
- a model: its versions, policy, volume, quality and delay per bucket, latest retraining, and the champion
  against challenger comparison (a bounded index walk of the challenger's newest shadow rows).

Drift status and the estimated score come from each version's newest drift report (monitoring.page_drift,
one grouped query); latency percentiles from the hourly latency histograms (predictions.LatencyHourly).
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from django.db.models import Exists, OuterRef, Subquery, Sum
from django.db.models.functions import Trunc
from django.http import Http404
from django.utils import timezone

from feedback import selectors as feedback_selectors
from feedback.models import DelayHourly, QualityHourly
from mlops_site import latency_bins, rollups
from mlops_site.errors import Invalid, problem
from models_registry import selectors as registry_selectors
from models_registry.models import ModelVersion, RegisteredModel, Stage, Task
from monitoring import page_drift
from predictions.models import LatencyHourly, PredictionHourly
from training.models import Retraining, RetrainingPolicy

#: Live-score windows of the overview (feedback's rollup windows): one for every model, so the page costs
#: the same few grouped queries however many models there are. A policy over the last N labels is read
#: over this window here; its own decisions still use its window.
OVERVIEW_WINDOWS = ("24h", "7d", "all")
OVERVIEW_WINDOW = "7d"
#: The volume sparkline: the last 7 days, hourly.
SPARK_HOURS = 7 * 24
#: Periods of a model's page: days shown and the bucket of each point.
PERIODS = {"24h": (1, "hour"), "7d": (7, "hour"), "30d": (30, "day"), "90d": (90, "day")}
PERIOD = "30d"
#: The live score shown when no policy names one.
DEFAULT_METRIC = {Task.CLASSIFICATION: "accuracy", Task.REGRESSION: "mae"}
LOWER_IS_BETTER = frozenset({"mae", "rmse"})
_VERSION_FIELDS = ("pk", "registered_model_id", "version", "stage", "task", "classes", "metrics")


def _option_check(name: str, value: Any, allowed: tuple[str, ...] | list[str], default: str) -> str:
    if value in (None, ""):
        return default
    if value not in allowed:
        raise Invalid(
            f"Unknown {name} {str(value)[:40]!r}.",
            errors=[
                problem(f"'{name}' must be one of: {', '.join(allowed)}.", field=name, code="invalid_option")
            ],
        )
    return str(value)


def window_check(window: Any) -> str:
    """The overview's live-score window; raises Invalid (a 400 page) naming `window`."""
    return _option_check("window", window, OVERVIEW_WINDOWS, OVERVIEW_WINDOW)


def period_check(period: Any) -> str:
    """A model page's period; raises Invalid (a 400 page) naming `period`."""
    return _option_check("period", period, list(PERIODS), PERIOD)


@dataclass(frozen=True)
class Score:
    """A live metric against the retraining policy's threshold (None without a policy)."""

    metric: str
    value: float | None
    n: int
    threshold: float | None = None
    policy_enabled: bool = False

    @property
    def lower_is_better(self) -> bool:
        return self.metric in LOWER_IS_BETTER

    @property
    def breached(self) -> bool | None:
        """Whether the live value is on the wrong side of the threshold; None when either is missing."""
        if self.value is None or self.threshold is None:
            return None
        return self.value > self.threshold if self.lower_is_better else self.value < self.threshold


@dataclass(frozen=True)
class LastRetraining:
    pk: int
    created_at: dt.datetime
    status: str
    decision: str
    trigger: str


@dataclass
class OverviewRow:
    """One registered model on the overview."""

    model: RegisteredModel
    production: ModelVersion | None
    policy: RetrainingPolicy | None
    score: Score | None
    coverage: float | None
    volume: int
    spark_hours: list[dt.datetime] = field(default_factory=list)
    spark_counts: list[int] = field(default_factory=list)
    last_retraining: LastRetraining | None = None
    # The production version's estimated score before labels, from its newest drift report.
    estimated: dict[str, Any] | None = None
    # The production version's drift status from its newest drift report (page_drift.drift_and_estimates).
    drift: dict[str, Any] | None = None


def _metric_of(task: str, policy: RetrainingPolicy | None) -> str:
    if policy is not None and policy.metric:
        return policy.metric
    return DEFAULT_METRIC.get(task, "accuracy")


def _score(version: ModelVersion, figures: dict[str, Any], policy: RetrainingPolicy | None) -> Score:
    metric = _metric_of(version.task, policy)
    return Score(
        metric=metric,
        value=figures.get(metric),
        n=int(figures.get("n") or 0),
        threshold=policy.threshold if policy is not None else None,
        policy_enabled=bool(policy and policy.enabled),
    )


def _versions_live(versions: list[ModelVersion], *, window: str, now: dt.datetime) -> dict[int, Any]:
    """Live figures of many versions at once, in three grouped reads of the rollups.

    feedback's own reader of the rollups (the one behind the model page and the quality API), so every
    page shows the same numbers. It is private there; a public `versions_quality` would be the clean seam.
    """
    if not versions:
        return {}
    return feedback_selectors.versions_quality(versions, window=window, last_n=0, now=now)


@dataclass
class Latency:
    """One version's request latency over the period: percentiles (ms) per bucket and overall."""

    requests: int
    overall: dict[int, float | None]
    per_bucket: dict[int, list[float | None]]  # percentile -> one value per bucket (None: no request)


def latency_percentiles(
    *, ids: list[int], since: dt.datetime, bucket: str, position: dict[dt.datetime, int]
) -> dict[int, Latency]:
    """Percentiles per version and bucket from the hourly latency histograms, in one grouped query."""
    hist: dict[int, list[dict[int, int]]] = {pk: [defaultdict(int) for _ in position] for pk in ids}
    for version_id, at, index, n in (
        LatencyHourly.objects.filter(model_version_id__in=ids, hour__gte=since)
        .annotate(bucket=Trunc("hour", bucket, tzinfo=dt.UTC))
        .values("model_version_id", "bucket", "bin")
        .annotate(total=Sum("n"))
        .values_list("model_version_id", "bucket", "bin", "total")
    ):
        slot = position.get(_bucket_start(at, bucket))
        if slot is not None and n:
            hist[version_id][slot][index] += int(n)
    found = {}
    for version_id, per_bucket in hist.items():
        whole: dict[int, int] = defaultdict(int)
        for counts in per_bucket:
            for index, n in counts.items():
                whole[index] += n
        if not whole:
            continue
        found[version_id] = Latency(
            requests=sum(whole.values()),
            overall=latency_bins.percentiles(whole),
            per_bucket={
                q: [latency_bins.percentile(counts, q) for counts in per_bucket]
                for q in latency_bins.PERCENTILES
            },
        )
    return found


def _latest_retraining_ids() -> Subquery:
    return Subquery(
        Retraining.objects.filter(registered_model=OuterRef("pk"))
        .order_by("-created_at", "-id")
        .values("pk")[:1]
    )


def monitoring_overview(
    *, window: str = OVERVIEW_WINDOW, now: dt.datetime | None = None
) -> list[OverviewRow]:
    """Every registered model with a version, by name, with its production version, live score against
    the policy's threshold over `window`, 7 days of hourly volume and its latest retraining; 8 queries."""
    window = window_check(window)
    now = now or timezone.now()
    models = list(
        RegisteredModel.objects.annotate(last_retraining_id=_latest_retraining_ids())
        # A model a staff member registered but never gave a version has nothing to monitor.
        .filter(Exists(ModelVersion.objects.filter(registered_model=OuterRef("pk"))))
        .only("pk", "name", "task", "description")
        .order_by("name")
    )
    production = {
        v.registered_model_id: v
        for v in ModelVersion.objects.filter(stage=Stage.PRODUCTION)
        .only(*_VERSION_FIELDS)
        .order_by("registered_model_id", "version")
    }
    policies = {p.registered_model_id: p for p in RetrainingPolicy.objects.all()}
    retraining_ids = [m.last_retraining_id for m in models if m.last_retraining_id]
    retrainings = {
        r.pk: LastRetraining(r.pk, r.created_at, r.status, r.decision, r.trigger)
        for r in Retraining.objects.filter(pk__in=retraining_ids).only(
            "pk", "created_at", "status", "decision", "trigger"
        )
    }
    versions = list(production.values())
    live = _versions_live(versions, window=window, now=now)
    drift, estimates = page_drift.drift_and_estimates(versions=versions)

    since = rollups.hour_of(now) - dt.timedelta(hours=SPARK_HOURS - 1)
    hours = [since + dt.timedelta(hours=i) for i in range(SPARK_HOURS)]
    counts: dict[int, dict[dt.datetime, int]] = defaultdict(dict)
    for model_id, hour, n in (
        PredictionHourly.objects.filter(hour__gte=since)
        .values("model_version__registered_model_id", "hour")
        .annotate(total=Sum("n"))
        .values_list("model_version__registered_model_id", "hour", "total")
    ):
        counts[model_id][rollups.hour_of(hour)] = int(n or 0)

    rows = []
    for model in models:
        version = production.get(model.pk)
        policy = policies.get(model.pk)
        figures = live.get(version.pk) if version is not None else None
        coverage = (figures or {}).get("coverage") or {}
        per_hour = counts.get(model.pk, {})
        rows.append(
            OverviewRow(
                model=model,
                production=version,
                policy=policy,
                score=_score(version, figures, policy) if version is not None and figures else None,
                coverage=coverage.get("ratio"),
                volume=sum(per_hour.values()),
                spark_hours=hours,
                spark_counts=[per_hour.get(h, 0) for h in hours],
                last_retraining=retrainings.get(model.last_retraining_id),
                estimated=estimates.get(version.pk) if version is not None else None,
                drift=drift.get(version.pk) if version is not None else None,
            )
        )
    return rows


# --------------------------------------------------------------------------------------------------
# One model
# --------------------------------------------------------------------------------------------------
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


def _bucket_start(moment: dt.datetime, bucket: str) -> dt.datetime:
    moment = rollups.hour_of(moment)
    return moment.replace(hour=0) if bucket == "day" else moment


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
    end = _bucket_start(now, bucket)
    step = dt.timedelta(days=1) if bucket == "day" else dt.timedelta(hours=1)
    count = days if bucket == "day" else days * 24
    since = end - step * (count - 1)
    buckets = [since + step * i for i in range(count)]
    position = {b: i for i, b in enumerate(buckets)}

    versions = list(
        ModelVersion.objects.filter(registered_model=model)
        .only(*_VERSION_FIELDS, "created_at")
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
        index = position.get(_bucket_start(at, bucket))
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
        index = position.get(_bucket_start(at, bucket))
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
    metric = _metric_of(model.task or (versions[0].task if versions else ""), policy)
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
                score=_score(version, _bucket_figures(version, total), policy) if total else None,
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
