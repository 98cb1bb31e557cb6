"""Gauges computed at scrape time from the database's rollups: a few queries, never raw prediction rows.

Each source is a small function yielding metric families; adding a gauge is adding one to SOURCES. The
collector is registered only in the registry /metrics builds per scrape (monitoring.metrics_view), so
nothing here is written to the multiprocess files and every process answers the same figures.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from django.db.models import F, Q, Sum
from django.utils import timezone
from prometheus_client.core import GaugeMetricFamily, Metric

from feedback.models import QualityHourly
from models_registry.models import ChallengerMode, ModelVersion, Stage, Task
from monitoring import drift_metrics
from monitoring.models import WorkerHeartbeat
from predictions.models import PredictionHourly, ShadowPrediction
from training.models import RetrainingPolicy

logger = logging.getLogger(__name__)

Source = Callable[[dt.datetime], Iterable[Metric]]

#: Windows of the live score, by label, as the time before now they start at.
WINDOWS = {"24h": dt.timedelta(hours=24), "7d": dt.timedelta(days=7)}
COVERAGE_WINDOW = dt.timedelta(days=7)


def _quality_rows(now: dt.datetime) -> list[dict[str, Any]]:
    """Labelled counts, right answers and absolute errors per version over each window: one query."""
    since = {label: now - delta for label, delta in WINDOWS.items()}
    sums: dict[str, Any] = {}
    for label, start in since.items():
        in_window = Q(hour__gte=start)
        sums[f"n_{label}"] = Sum("n", filter=in_window)
        sums[f"right_{label}"] = Sum("n", filter=in_window & Q(predicted=F("actual")))
        sums[f"abs_{label}"] = Sum("sum_abs_error", filter=in_window)
    return list(
        QualityHourly.objects.filter(hour__gte=min(since.values()))
        .values(
            "model_version_id",
            model=F("model_version__registered_model__name"),
            version=F("model_version__version"),
            task=F("model_version__task"),
        )
        .annotate(**sums)
        .order_by()
    )


def live_scores(now: dt.datetime) -> Iterator[Metric]:
    """Accuracy (classification) or mean absolute error (regression) of labelled predictions per window."""
    family = GaugeMetricFamily(
        "mlops_model_live_score",
        "Live score of a version's labelled predictions made in the window: accuracy or mae.",
        labels=["model", "version", "metric", "window"],
    )
    for row in _quality_rows(now):
        regression = row["task"] == Task.REGRESSION
        for label in WINDOWS:
            n = row[f"n_{label}"] or 0
            if not n:
                continue
            score = (row[f"abs_{label}"] or 0.0) / n if regression else (row[f"right_{label}"] or 0) / n
            metric = "mae" if regression else "accuracy"
            family.add_metric([row["model"], str(row["version"]), metric, label], score)
    yield family


def feedback_coverage(now: dt.datetime) -> Iterator[Metric]:
    """Labelled / predicted rows of each version over the last 7 days, both read from hourly rollups."""
    since = now - COVERAGE_WINDOW
    predicted = (
        PredictionHourly.objects.filter(hour__gte=since)
        .values(
            "model_version_id",
            model=F("model_version__registered_model__name"),
            version=F("model_version__version"),
        )
        .annotate(total=Sum("n"))
        .order_by()
    )
    labelled = dict(
        QualityHourly.objects.filter(hour__gte=since)
        .values("model_version_id")
        .annotate(total=Sum("n"))
        .order_by()
        .values_list("model_version_id", "total")
    )
    family = GaugeMetricFamily(
        "mlops_model_feedback_coverage",
        "Share of a version's predictions of the last 7 days that have an outcome.",
        labels=["model", "version"],
    )
    for row in predicted:
        if row["total"]:
            coverage = min((labelled.get(row["model_version_id"]) or 0) / row["total"], 1.0)
            family.add_metric([row["model"], str(row["version"])], coverage)
    yield family


def score_thresholds(now: dt.datetime) -> Iterator[Metric]:
    family = GaugeMetricFamily(
        "mlops_model_score_threshold",
        "The live score an enabled retraining policy retrains below (or above, for errors).",
        labels=["model", "metric"],
    )
    for model, metric, threshold in RetrainingPolicy.objects.filter(enabled=True).values_list(
        "registered_model__name", "metric", "threshold"
    ):
        family.add_metric([model, metric], threshold)
    yield family


def production_versions(now: dt.datetime) -> Iterator[Metric]:
    family = GaugeMetricFamily(
        "mlops_model_production_version", "The version number in production, per model.", labels=["model"]
    )
    latest: dict[str, int] = {}
    for model, version in ModelVersion.objects.filter(stage=Stage.PRODUCTION).values_list(
        "registered_model__name", "version"
    ):
        latest[model] = max(version, latest.get(model, 0))
    for model, version in sorted(latest.items()):
        family.add_metric([model], version)
    yield family


def worker_heartbeats(now: dt.datetime) -> Iterator[Metric]:
    family = GaugeMetricFamily(
        "mlops_worker_heartbeat_timestamp_seconds",
        "When each Celery worker last ran the heartbeat task (Unix time).",
        labels=["hostname"],
    )
    for hostname, last_seen in WorkerHeartbeat.objects.values_list("hostname", "last_seen"):
        family.add_metric([hostname], last_seen.timestamp())
    yield family


def queue_lengths(now: dt.datetime) -> Iterator[Metric]:
    """Messages waiting in each Celery queue, when the broker is Redis (one round trip); nothing otherwise."""
    from mlops_site import celery

    lengths = celery.queue_lengths()
    if lengths is None:
        return
    family = GaugeMetricFamily(
        "mlops_queue_length", "Messages waiting in a Celery queue of the Redis broker.", labels=["queue"]
    )
    for queue, length in sorted(lengths.items()):
        family.add_metric([queue], length)
    yield family


#: The newest shadow answers a challenger's disagreement is measured on: one indexed read per challenger.
SHADOW_ROWS = 1000


def shadow_disagreement(now: dt.datetime) -> Iterator[Metric]:
    """For each classifier in shadow, the share of its newest answers whose class differs from the
    champion's: how much a promotion would change, before any outcome is known. Regression versions are
    left out: their answers always differ a little, and the paired comparison judges them on errors."""
    family = GaugeMetricFamily(
        "mlops_shadow_disagreement_ratio",
        f"Share of a shadow challenger's newest {SHADOW_ROWS} answers whose class is not the champion's.",
        labels=["model", "version"],
    )
    challengers = ModelVersion.objects.filter(
        stage=Stage.STAGING,
        task=Task.CLASSIFICATION,
        registered_model__challenger_mode=ChallengerMode.SHADOW,
    ).values_list("pk", "registered_model__name", "version")
    for version_id, model, version in challengers:
        pairs = list(
            ShadowPrediction.objects.filter(model_version_id=version_id)
            .order_by("-prediction_id")
            .values_list("prediction_value", "prediction__prediction")[:SHADOW_ROWS]
        )
        if pairs:
            differ = sum(str(shadow) != str(served) for shadow, served in pairs)
            family.add_metric([model, str(version)], differ / len(pairs))
    yield family


#: Every source of the collector, in the order /metrics lists them.
SOURCES: list[Source] = [
    live_scores,
    feedback_coverage,
    score_thresholds,
    production_versions,
    worker_heartbeats,
    queue_lengths,
    shadow_disagreement,
    drift_metrics.drift_metric_families,
]


class DatabaseCollector:
    """A prometheus_client collector over SOURCES; one failing source is logged and left out."""

    def __init__(self, sources: Iterable[Source] | None = None) -> None:
        self.sources = list(SOURCES if sources is None else sources)

    def describe(self) -> list[Metric]:
        # Registering must not query: names are known only once collected.
        return []

    def collect(self) -> Iterator[Metric]:
        now = timezone.now()
        for source in self.sources:
            try:
                families = list(source(now))
            except Exception:  # a scrape still answers the other gauges and every counter
                logger.exception("metrics source %s failed", source.__name__)
                continue
            yield from families
