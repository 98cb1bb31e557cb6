"""Tests of drift_metric_families: gauges read from the latest drift reports."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from monitoring import drift_metrics, drift_services
from monitoring.tests.drift_helpers import drift_version, traffic_store

NOW = dt.datetime(2025, 6, 2, 0, 20, tzinfo=dt.UTC)


class _Families:
    def collect(self):
        return drift_metrics.drift_metric_families(NOW)


def samples() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families())  # type: ignore[arg-type]
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(generate_latest(registry).decode())
        for s in family.samples
    }


@pytest.mark.django_db
def test_the_latest_report_is_exported_per_feature_and_per_version(django_assert_max_num_queries) -> None:
    version = drift_version(name="churn")
    hours = [NOW.replace(minute=0) - dt.timedelta(hours=h) for h in range(1, 7)]
    traffic_store(version, n=3000, hours=hours, rng=np.random.default_rng(1), shift=1.0)
    drift_services.drift_reports_compute(now=NOW)
    with django_assert_max_num_queries(1):
        found = samples()
    labels = (("model", "churn"), ("version", "1"))
    assert found[("mlops_model_drifting", labels)] == 1.0
    assert found[("mlops_drift_share", labels)] == pytest.approx(2 / 3)
    assert found[("mlops_drift_detected", (("feature", "x"), *labels))] == 1.0
    assert found[("mlops_drift_detected", (("feature", "z"), *labels))] == 0.0
    assert found[("mlops_drift_score", (("feature", "x"), *labels))] >= 0.1
    estimated = found[("mlops_model_estimated_score", (("metric", "accuracy"), *labels))]
    assert 0.7 < estimated < 1.0


@pytest.mark.django_db
def test_no_reports_export_empty_families() -> None:
    assert samples() == {}
