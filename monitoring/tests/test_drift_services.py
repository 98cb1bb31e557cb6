"""Tests of drift_reports_compute: reports from the rollups, drift verdicts, the estimate, idempotency."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from ml import drift
from models_registry.models import ChallengerMode
from monitoring import drift_services
from monitoring.models import DriftReport
from monitoring.tests.drift_helpers import drift_version, traffic_store

NOW = dt.datetime(2025, 6, 2, 0, 20, tzinfo=dt.UTC)
WINDOW_END = NOW.replace(minute=0)


def hours_before_end(count: int) -> list[dt.datetime]:
    return [WINDOW_END - dt.timedelta(hours=h) for h in range(1, count + 1)]


def report_of(version) -> DriftReport:
    return DriftReport.objects.get(model_version=version)


@pytest.mark.django_db
@pytest.mark.parametrize(("rows", "numeric_test"), [(240, drift.KS), (6000, drift.WASSERSTEIN)])
def test_a_shifted_window_is_drifting_and_an_unshifted_one_is_not(rows: int, numeric_test: str) -> None:
    steady = drift_version(name="steady")
    moved = drift_version(name="moved")
    rng = np.random.default_rng(rows)
    traffic_store(steady, n=rows, hours=hours_before_end(24), rng=rng)
    traffic_store(moved, n=rows, hours=hours_before_end(24), rng=rng, shift=1.0)

    drift_services.drift_reports_compute(now=NOW)

    calm, shifted = report_of(steady), report_of(moved)
    assert calm.rows == shifted.rows == rows
    assert {f["feature"]: f["test"] for f in calm.features}["x"] == numeric_test
    assert not calm.drifting
    assert calm.features_drifted == 0
    assert shifted.drifting
    assert shifted.share_drifted >= 0.5
    drifted = {f["feature"] for f in shifted.features if f["drifted"]}
    assert {"x", "c"} <= drifted
    assert "z" not in drifted
    # The model answers "yes" more often when x moves up: prediction drift too.
    assert shifted.prediction["drifted"]
    assert not calm.prediction["drifted"]


@pytest.mark.django_db
def test_the_estimated_accuracy_is_close_to_the_true_one_on_a_covariate_shifted_window() -> None:
    version = drift_version()
    sent = traffic_store(version, n=6000, hours=hours_before_end(24), rng=np.random.default_rng(7), shift=1.0)
    drift_services.drift_reports_compute(now=NOW)
    report = report_of(version)
    truth = float(np.mean(np.asarray(sent.predictions, dtype=object) == sent.truth))
    assert report.estimated_metric == "accuracy"
    assert report.estimated_rows == 6000
    assert abs(report.estimated_score - truth) <= max(3 * report.estimated_stderr, 0.015)


@pytest.mark.django_db
def test_running_the_job_twice_for_the_same_window_writes_the_same_report() -> None:
    version = drift_version()
    traffic_store(version, n=500, hours=hours_before_end(3), rng=np.random.default_rng(8), shift=0.5)
    first = drift_services.drift_reports_compute(now=NOW)
    again = drift_services.drift_reports_compute(now=NOW + dt.timedelta(minutes=30))
    assert DriftReport.objects.count() == 1
    assert [r.pk for r in first] == [r.pk for r in again]
    report = report_of(version)
    assert report.window_end == WINDOW_END
    assert report.window_hours == 24
    assert report.features == first[0].features
    assert report.estimated_score == first[0].estimated_score


@pytest.mark.django_db
def test_rows_outside_the_window_and_in_the_current_hour_are_not_counted(settings) -> None:
    settings.DRIFT_WINDOW_HOURS = 2
    version = drift_version()
    rng = np.random.default_rng(9)
    traffic_store(version, n=100, hours=hours_before_end(2), rng=rng)
    traffic_store(version, n=50, hours=[WINDOW_END - dt.timedelta(hours=3), WINDOW_END], rng=rng)
    drift_services.drift_reports_compute(now=NOW)
    assert report_of(version).rows == 100


@pytest.mark.django_db
def test_a_quiet_version_gets_a_report_that_tests_nothing_and_does_not_drift() -> None:
    version = drift_version()
    drift_services.drift_reports_compute(now=NOW)
    report = report_of(version)
    assert report.rows == 0
    assert report.features_tested == 0
    assert not report.drifting
    assert report.estimated_score is None


@pytest.mark.django_db
def test_only_production_versions_and_challengers_in_shadow_or_canary_are_checked() -> None:
    production = drift_version(version=1)
    staging = drift_version(version=2, stage="staging")
    drift_version(version=3, stage="archived")
    drift_version(name="no-profile", profile=False)
    assert [r.model_version_id for r in drift_services.drift_reports_compute(now=NOW)] == [production.pk]

    registered = production.registered_model
    registered.challenger_mode = ChallengerMode.SHADOW
    registered.save(update_fields=["challenger_mode"])
    checked = drift_services.drift_reports_compute(now=NOW)
    assert sorted(r.model_version_id for r in checked) == [production.pk, staging.pk]
