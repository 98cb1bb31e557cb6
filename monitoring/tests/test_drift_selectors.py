"""Tests of the drift reads: the latest report per version, and a feature's two distributions."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from monitoring import drift_selectors, drift_services
from monitoring.tests.drift_helpers import drift_version, traffic_store

NOW = dt.datetime(2025, 6, 2, 0, 20, tzinfo=dt.UTC)
END = NOW.replace(minute=0)


@pytest.mark.django_db
def test_the_latest_report_of_each_version_is_read_in_one_query(django_assert_num_queries) -> None:
    first, second = drift_version(name="one"), drift_version(name="two")
    for hours in (2, 1, 0):
        drift_services.drift_reports_compute(now=NOW - dt.timedelta(hours=hours))
    with django_assert_num_queries(1):
        latest = list(drift_selectors.drift_reports_latest())
        names = [r.model_version.registered_model.name for r in latest]
    assert names == ["one", "two"]
    assert {r.window_end for r in latest} == {END}
    assert drift_selectors.drift_report_latest(model_version=first).window_end == END
    assert drift_selectors.drift_report_latest(model_version=second).window_end == END


@pytest.mark.django_db
def test_a_feature_s_reference_and_current_shares_are_drawn_on_the_same_bins() -> None:
    version = drift_version()
    hours = [END - dt.timedelta(hours=h) for h in (1, 2)]
    traffic_store(version, n=400, hours=hours, rng=np.random.default_rng(1), shift=1.0)
    shown = drift_selectors.feature_distribution(
        model_version=version, feature="x", window_end=END, window_hours=24
    )
    assert shown is not None
    assert len(shown["bins"]) == len(shown["reference"]) == len(shown["current"])
    assert sum(shown["reference"]) == pytest.approx(1.0)
    assert sum(shown["current"]) == pytest.approx(1.0)
    assert shown["current_rows"] == 400
    # Shifted up by one standard deviation: far more of the current rows lie in the top bins.
    assert sum(shown["current"][-5:]) > 2 * sum(shown["reference"][-5:])

    output = drift_selectors.feature_distribution(
        model_version=version, feature="", window_end=END, window_hours=24, source="prediction"
    )
    assert output is not None
    assert output["bins"][:2] == ["no", "yes"]
    assert output["current_rows"] == 400
    assert (
        drift_selectors.feature_distribution(
            model_version=version, feature="nope", window_end=END, window_hours=24
        )
        is None
    )
