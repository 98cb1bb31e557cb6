"""Reads for the monitoring overview (a row per registered model) and what one model's page shares with it
(monitoring.model_page_selectors): scores, latency percentiles, the window and period options.

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
from django.utils import timezone

from feedback import selectors as feedback_selectors
from mlops_site import latency_bins, rollups
from mlops_site.errors import Invalid, problem
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
VERSION_FIELDS = ("pk", "registered_model_id", "version", "stage", "task", "classes", "metrics")


def option_check(name: str, value: Any, allowed: tuple[str, ...] | list[str], default: str) -> str:
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
    return option_check("window", window, OVERVIEW_WINDOWS, OVERVIEW_WINDOW)


def period_check(period: Any) -> str:
    """A model page's period; raises Invalid (a 400 page) naming `period`."""
    return option_check("period", period, list(PERIODS), PERIOD)


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


def metric_of(task: str, policy: RetrainingPolicy | None) -> str:
    if policy is not None and policy.metric:
        return policy.metric
    return DEFAULT_METRIC.get(task, "accuracy")


def score_of(version: ModelVersion, figures: dict[str, Any], policy: RetrainingPolicy | None) -> Score:
    metric = metric_of(version.task, policy)
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


def bucket_start(moment: dt.datetime, bucket: str) -> dt.datetime:
    moment = rollups.hour_of(moment)
    return moment.replace(hour=0) if bucket == "day" else moment


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
        slot = position.get(bucket_start(at, bucket))
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
        .only(*VERSION_FIELDS)
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
                score=score_of(version, figures, policy) if version is not None and figures else None,
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
