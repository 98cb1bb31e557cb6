"""Hourly per-feature rollups of stored predictions, binned into their version's reference bins."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from django.db import connection

from ml import drift, drift_bins
from ml.features import NUMERIC
from mlops_site import rollups
from monitoring.models import FeatureHourly

Source = FeatureHourly.Source
#: Rows and sums to add per (version, hour, source, feature, bin).
FeatureDeltas = dict[tuple[Any, ...], tuple[int, float]]


@dataclass(frozen=True)
class _Binners:
    profile: dict[str, Any]
    created_at: Any
    inputs: list[tuple[str, drift_bins.Binner]]
    prediction: drift_bins.Binner | None
    confidence: drift_bins.Binner | None


# Binners per version id, reused while the version's profile is the same (profiles are written once).
_cache: dict[int, _Binners] = {}
_cache_lock = threading.Lock()
_CACHE_MAX = 256


def _binners(version_id: int, profile: dict[str, Any], *, created_at: Any = None) -> _Binners:
    found = _cache.get(version_id)
    # A version's profile is written once, so the version (its id and creation time: test databases roll
    # back their sequences and reuse ids) identifies it; comparing the profiles themselves cost 150 µs.
    if found is not None and (
        found.profile is profile
        or (created_at is not None and found.created_at == created_at)
        or found.profile == profile
    ):
        return found
    prediction = profile.get("prediction")
    built = _Binners(
        profile=profile,
        created_at=created_at,
        inputs=[(spec["name"], drift_bins.Binner.of(spec)) for spec in profile["features"]],
        prediction=drift_bins.Binner.of(prediction) if prediction else None,
        confidence=drift.confidence_binner() if profile.get("confidence") else None,
    )
    with _cache_lock:
        if len(_cache) >= _CACHE_MAX:
            _cache.clear()
        _cache[version_id] = built
    return built


def _deltas_add(
    deltas: FeatureDeltas,
    key: tuple[Any, ...],
    binner: drift_bins.Binner,
    values: np.ndarray | Sequence[Any],
    *,
    count_missing: bool = True,
) -> None:
    """Add `values` binned to `deltas` under `key` + bin: (rows, sum of values) per bin that got rows."""
    if len(values) <= drift_bins.FEW_VALUES:
        for index, counted in binner.bin_few(values).items():
            if index != drift_bins.MISSING_BIN or count_missing:
                deltas[(*key, index)] = counted
        return
    histogram = binner.bin(values)
    for index in np.flatnonzero(histogram.counts).tolist():
        total = float(histogram.sums[index]) if histogram.sums is not None else 0.0
        deltas[(*key, index)] = (int(histogram.counts[index]), total)
    if histogram.missing and count_missing:
        deltas[(*key, drift_bins.MISSING_BIN)] = (histogram.missing, 0.0)


def prediction_features_add(
    *,
    model_version: Any,
    columns: Mapping[str, np.ndarray],
    predictions: Sequence[Any] | np.ndarray,
    confidences: Sequence[float | None] | np.ndarray | None,
    hour: dt.datetime,
) -> None:
    """Add one batch of stored predictions to the version's hourly feature rollups.

    `columns` are the validated model-ready arrays (predictions.validation.ValidatedRows.columns for the
    stored rows: float64 with NaN for missing, or canonical texts with "" for missing); `predictions` the
    stored labels or values, `confidences` the highest class probability per row (None where there is
    none). Call inside the transaction that stores the rows, like prediction_hours_add: the counters then
    count exactly the stored rows. A version without a reference profile is skipped.
    """
    feature_deltas_add(
        prediction_features_binned(
            model_version=model_version,
            columns=columns,
            predictions=predictions,
            confidences=confidences,
            hour=hour,
        )
    )


def prediction_features_binned(
    *,
    model_version: Any,
    columns: Mapping[str, np.ndarray],
    predictions: Sequence[Any] | np.ndarray,
    confidences: Sequence[float | None] | np.ndarray | None,
    hour: dt.datetime,
) -> FeatureDeltas:
    """What prediction_features_add adds, binned but not written: a batch chunk bins its rows before its
    transaction opens and adds them (feature_deltas_add) inside it, so the lock is held only to write."""
    profile = getattr(model_version, "reference_profile", None)
    if not profile:
        return {}
    binners = _binners(model_version.pk, profile, created_at=getattr(model_version, "created_at", None))
    key = (model_version.pk, rollups.hour_of(hour))
    deltas: FeatureDeltas = {}
    for name, binner in binners.inputs:
        values = columns.get(name)
        if values is not None and len(values):
            _deltas_add(deltas, (*key, Source.INPUT, name), binner, values)
    if binners.prediction is not None and len(predictions):
        outputs = (
            np.asarray(predictions, dtype="float64")
            if binners.prediction.kind == NUMERIC
            else drift.labels_as_text(predictions)
        )
        _deltas_add(deltas, (*key, Source.PREDICTION, ""), binners.prediction, outputs)
    if binners.confidence is not None and confidences is not None and len(confidences):
        if isinstance(confidences, np.ndarray):
            values = confidences.astype("float64", copy=False)
        else:
            values = np.asarray([np.nan if c is None else c for c in confidences], dtype="float64")
        # A row without probabilities has no confidence: it is not "missing" input, so it is not counted.
        _deltas_add(deltas, (*key, Source.CONFIDENCE, ""), binners.confidence, values, count_missing=False)
    return deltas


#: Rows per INSERT: 7 parameters each stays far below SQLite's 32,766 and PostgreSQL's 65,535.
_ROWS_PER_STATEMENT = 1000


def feature_deltas_add(deltas: FeatureDeltas) -> None:
    """Add to the FeatureHourly rows in one INSERT … ON CONFLICT DO UPDATE per 1,000 bins.

    What mlops_site.rollups.counters_add does, as one statement rather than one per row: a batch touches
    hundreds of bins (features x bins), and executemany with a datetime adapted per row cost more than the
    binning itself. Sorted, so two transactions adding to the same rows lock them in the same order.
    """
    if not deltas:
        return
    quote = connection.ops.quote_name
    meta = FeatureHourly._meta
    table = quote(meta.db_table)
    keys = [meta.get_field(name).column for name in ("model_version", "hour", "source", "feature", "bin")]
    sums = [meta.get_field(name).column for name in ("n", "value_sum")]
    updates = ", ".join(f"{quote(c)} = {table}.{quote(c)} + excluded.{quote(c)}" for c in sums)
    names = ", ".join(quote(c) for c in (*keys, *sums))
    conflict = ", ".join(quote(c) for c in keys)
    ordered = sorted(deltas.items(), key=lambda item: (item[0][2], item[0][3], item[0][4]))
    # Every key of one call shares the version and the hour: adapt the hour once.
    hour = connection.ops.adapt_datetimefield_value(ordered[0][0][1])
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            # One short statement whatever the number of bins: the columns go as arrays. psycopg parses a
            # statement with hundreds of placeholders anew on every call (it caches short ones only).
            version_id = ordered[0][0][0]
            columns = list(
                zip(*((key[2], key[3], key[4], n, total) for key, (n, total) in ordered), strict=True)
            )
            cursor.execute(
                f"INSERT INTO {table} ({names}) SELECT %s, %s, s, f, b, n, x "  # noqa: S608
                "FROM unnest(%s::text[], %s::text[], %s::smallint[], %s::bigint[], %s::float8[]) "
                f"AS u(s, f, b, n, x) ON CONFLICT ({conflict}) DO UPDATE SET {updates}",
                [version_id, hour, *(list(column) for column in columns)],
            )
            return
        for start in range(0, len(ordered), _ROWS_PER_STATEMENT):
            chunk = ordered[start : start + _ROWS_PER_STATEMENT]
            values = ", ".join(["(%s, %s, %s, %s, %s, %s, %s)"] * len(chunk))
            params: list[Any] = []
            for (version_id, _hour, source, feature, index), (n, value_sum) in chunk:
                params += [version_id, hour, source, feature, index, n, value_sum]
            cursor.execute(
                f"INSERT INTO {table} ({names}) VALUES {values} "  # noqa: S608
                f"ON CONFLICT ({conflict}) DO UPDATE SET {updates}",
                params,
            )
