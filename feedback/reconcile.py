"""The rollup check: rebuild every hourly rollup from the raw rows and compare it with the kept one."""

from __future__ import annotations

import datetime as dt
import math
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from django.db import connection, transaction
from django.db.models import Count, F
from django.db.models.functions import TruncHour

from feedback import quality
from feedback.models import DelayHourly, Feedback, QualityHourly
from mlops_site import latency_bins, rollups
from predictions.models import (
    BatchPredictionChunk,
    Channel,
    LatencyHourly,
    Prediction,
    PredictionHourly,
    PredictionRequest,
)

_TABLES: dict[str, tuple[type, tuple[str, ...], tuple[str, ...]]] = {
    "quality": (
        QualityHourly,
        ("model_version_id", "hour", "predicted", "actual"),
        ("n", "sum_abs_error", "sum_sq_error"),
    ),
    "delay": (DelayHourly, ("model_version_id", "hour", "bin"), ("n",)),
    "predictions": (PredictionHourly, ("model_version_id", "hour"), ("n",)),
    "latency": (LatencyHourly, ("model_version_id", "hour", "bin"), ("n",)),
}


@dataclass
class Difference:
    table: str
    key: tuple[Any, ...]
    kept: tuple[float, ...] | None
    rebuilt: tuple[float, ...] | None

    def __str__(self) -> str:
        return f"{self.table} {self.key}: kept {self.kept}, rebuilt {self.rebuilt}"


@dataclass
class Report:
    rows_checked: dict[str, int] = field(default_factory=dict)
    differences: list[Difference] = field(default_factory=list)
    fixed: bool = False


def _feedback_rows() -> Iterator[tuple[Any, ...]]:
    yield from Feedback.objects.values_list(
        "model_version_id",
        "prediction_created_at",
        "created_at",
        "predicted_label",
        "predicted_value",
        "true_label",
        "true_value",
    ).iterator(chunk_size=10_000)


def _rebuilt() -> dict[str, dict[tuple[Any, ...], tuple[float, ...]]]:
    cells: dict[tuple[Any, ...], list[float]] = defaultdict(lambda: [0, 0.0, 0.0])
    delays: dict[tuple[Any, ...], list[int]] = defaultdict(lambda: [0])
    for version_id, made_at, created_at, predicted, predicted_value, actual, true_value in _feedback_rows():
        hour = rollups.hour_of(made_at)
        cell = cells[(version_id, hour, predicted, actual)]
        cell[0] += 1
        if true_value is not None and predicted_value is not None:
            error = true_value - predicted_value
            cell[1] += abs(error)
            cell[2] += error * error
        delays[(version_id, hour, quality.delay_bin((created_at - made_at).total_seconds()))][0] += 1
    counted: dict[tuple[Any, ...], int] = defaultdict(int)
    for version_id, hour, n in _prediction_hours():
        counted[(version_id, rollups.hour_of(hour))] += n
    volume = {key: (n,) for key, n in counted.items()}
    latencies: dict[tuple[Any, ...], list[int]] = defaultdict(lambda: [0])
    for version_id, created_at, latency_ms in _request_latencies():
        latencies[(version_id, rollups.hour_of(created_at), latency_bins.latency_bin(latency_ms))][0] += 1
    return {
        "quality": {key: tuple(v) for key, v in cells.items()},
        "delay": {key: tuple(v) for key, v in delays.items()},
        "predictions": volume,
        "latency": {key: tuple(v) for key, v in latencies.items()},
    }


def _request_latencies() -> Iterator[tuple[Any, ...]]:
    yield from (
        PredictionRequest.objects.exclude(channel=Channel.BATCH)
        .values_list("model_version_id", "created_at", "latency_ms")
        .iterator(chunk_size=10_000)
    )


def _prediction_hours() -> Iterator[tuple[Any, ...]]:
    """(version id, hour, rows) from the stored predictions, then from the chunks of batch jobs that kept
    the result file only, whose rows were counted but not stored."""
    yield from (
        Prediction.objects.annotate(bucket=TruncHour("created_at", tzinfo=dt.UTC))
        .values("model_version_id", "bucket")
        .annotate(n=Count("id"))
        .values_list("model_version_id", "bucket", "n")
        .iterator(chunk_size=10_000)
    )
    yield from (
        BatchPredictionChunk.objects.filter(
            job__store_predictions=False,
            status=BatchPredictionChunk.Status.SUCCEEDED,
            predicted_at__isnull=False,
        )
        .annotate(n=F("rows_done") - F("rows_failed"))
        .values_list("job__model_version_id", "predicted_at", "n")
        .iterator(chunk_size=10_000)
    )


def _kept(name: str) -> dict[tuple[Any, ...], tuple[float, ...]]:
    model, keys, sums = _TABLES[name]
    return {
        tuple(row[: len(keys)]): tuple(row[len(keys) :])
        for row in model.objects.values_list(*keys, *sums).iterator(chunk_size=10_000)
    }


def _same(kept: tuple[float, ...] | None, rebuilt: tuple[float, ...] | None) -> bool:
    kept = kept if kept is not None and any(kept) else None
    rebuilt = rebuilt if rebuilt is not None and any(rebuilt) else None
    if kept is None or rebuilt is None:
        return kept is rebuilt
    # Error sums kept by adding and subtracting floats drift from a fresh sum in the last digits.
    return all(math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-6) for a, b in zip(kept, rebuilt, strict=True))


def quality_reconcile(*, fix: bool = False) -> Report:
    """Compare every rollup with one rebuilt from Feedback and Prediction rows; with `fix`, replace the
    rows that differ.

    With `fix` on PostgreSQL the feedback and rollup tables are locked against writes (reads go on) while
    it runs, so no outcome arrives between the rebuild and the fix; predictions keep being made, and a
    prediction-hour row may then be rebuilt one request short, which the next check shows.
    """
    with transaction.atomic():
        if fix and connection.vendor == "postgresql":
            tables = [Feedback, QualityHourly, DelayHourly]
            names = ", ".join(connection.ops.quote_name(m._meta.db_table) for m in tables)
            with connection.cursor() as cursor:
                cursor.execute(f"LOCK TABLE {names} IN SHARE ROW EXCLUSIVE MODE")
        rebuilt = _rebuilt()
        report = Report()
        for name in _TABLES:
            kept = _kept(name)
            report.rows_checked[name] = len(kept)
            for key in sorted(set(kept) | set(rebuilt[name]), key=lambda k: tuple(map(str, k))):
                if not _same(kept.get(key), rebuilt[name].get(key)):
                    report.differences.append(Difference(name, key, kept.get(key), rebuilt[name].get(key)))
        if fix and report.differences:
            _fix(report.differences)
            report.fixed = True
    return report


def _fix(differences: list[Difference]) -> None:
    for difference in differences:
        model, keys, sums = _TABLES[difference.table]
        lookup = dict(zip(keys, difference.key, strict=True))
        if difference.rebuilt is None:
            model.objects.filter(**lookup).delete()
        else:
            model.objects.update_or_create(
                **lookup, defaults=dict(zip(sums, difference.rebuilt, strict=True))
            )
