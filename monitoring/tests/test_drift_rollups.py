"""Tests of prediction_features_add: stored predictions binned per feature and hour, added up by batch."""

from __future__ import annotations

import datetime as dt
import time

import numpy as np
import pytest
from django.db.models import Sum

from ml import drift_bins
from monitoring import drift_rollups
from monitoring.models import FeatureHourly
from monitoring.tests.drift_helpers import drift_version, traffic, traffic_store, trained

HOUR = dt.datetime(2025, 6, 1, 10, tzinfo=dt.UTC)


def counts(version, *, source: str, feature: str = "") -> dict[int, int]:
    rows = (
        FeatureHourly.objects.filter(model_version=version, source=source, feature=feature)
        .values_list("bin")
        .annotate(total=Sum("n"))
    )
    return dict(rows)


@pytest.mark.django_db
def test_each_feature_is_counted_in_its_reference_bins_with_missing_values_apart() -> None:
    version = drift_version()
    sent = traffic(500, rng=np.random.default_rng(1))
    sent.columns["x"][:7] = np.nan
    sent.columns["c"][:3] = ""
    drift_rollups.prediction_features_add(
        model_version=version,
        columns=sent.columns,
        predictions=sent.predictions,
        confidences=sent.confidences,
        hour=HOUR.replace(minute=42),
    )
    for spec in trained().profile["features"]:
        expected = drift_bins.Binner.of(spec).bin(sent.columns[spec["name"]])
        found = counts(version, source="input", feature=spec["name"])
        assert found.pop(drift_bins.MISSING_BIN, 0) == expected.missing
        assert found == {i: int(n) for i, n in enumerate(expected.counts) if n}
    assert sum(counts(version, source="prediction").values()) == 500
    assert sum(counts(version, source="confidence").values()) == 500
    assert set(FeatureHourly.objects.values_list("hour", flat=True)) == {HOUR}


@pytest.mark.django_db
def test_batches_in_the_same_hour_add_up_and_the_value_sums_follow() -> None:
    version = drift_version()
    rng = np.random.default_rng(2)
    first = traffic_store(version, n=300, hours=[HOUR, HOUR, HOUR], rng=rng)
    total = FeatureHourly.objects.filter(model_version=version, source="input", feature="x").aggregate(
        n=Sum("n"), s=Sum("value_sum")
    )
    assert total["n"] == 300
    assert total["s"] == pytest.approx(float(np.sum(first.columns["x"])))


@pytest.mark.django_db
def test_a_version_without_a_reference_profile_is_skipped() -> None:
    version = drift_version(profile=False)
    traffic_store(version, n=10, hours=[HOUR], rng=np.random.default_rng(3))
    assert not FeatureHourly.objects.exists()


@pytest.mark.django_db
def test_rows_without_probabilities_are_left_out_of_the_confidence_histogram() -> None:
    version = drift_version()
    sent = traffic(4, rng=np.random.default_rng(4))
    drift_rollups.prediction_features_add(
        model_version=version,
        columns=sent.columns,
        predictions=sent.predictions,
        confidences=[None, None, 0.9, 0.97],
        hour=HOUR,
    )
    assert counts(version, source="confidence") == {17: 1, 19: 1}


@pytest.mark.django_db
def test_binning_a_batch_costs_a_few_microseconds_per_row() -> None:
    version = drift_version()
    sent = traffic(1000, rng=np.random.default_rng(5))
    drift_rollups.prediction_features_add(
        model_version=version, columns=sent.columns, predictions=sent.predictions,
        confidences=sent.confidences, hour=HOUR,
    )  # fmt: skip
    started = time.perf_counter()
    for _ in range(5):
        drift_rollups.prediction_features_add(
            model_version=version, columns=sent.columns, predictions=sent.predictions,
            confidences=sent.confidences, hour=HOUR,
        )  # fmt: skip
    per_row = (time.perf_counter() - started) / 5000
    # Generous for a shared CI machine; bench/drift_job.py reports the real figure.
    assert per_row < 50e-6
