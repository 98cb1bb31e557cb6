"""Tests for ml.drift: profiles, binning, each test against scipy on raw samples, and the drift verdicts."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy import stats
from scipy.spatial import distance

from ml import drift, drift_bins
from ml.drift import Binner, column_drift, column_spec


def _numeric(values: np.ndarray) -> dict:
    return column_spec(values, name="x", kind="numeric")


def _categorical(values: np.ndarray) -> dict:
    return column_spec(values, name="c", kind="categorical")


def _current(spec: dict, values: np.ndarray) -> drift_bins.Histogram:
    return Binner.of(spec).bin(values)


def test_a_numeric_profile_has_quantile_bins_with_open_ends_and_counts_every_training_row() -> None:
    values = np.random.default_rng(0).normal(size=5000)
    values[:50] = np.nan
    spec = _numeric(values)
    assert len(spec["edges"]) == drift.NUMERIC_BINS + 1
    assert len(spec["counts"]) == drift.NUMERIC_BINS + 2
    assert sum(spec["counts"]) == 4950
    assert spec["missing"] == 50
    # Quantile bins: each inner bin holds about 1/20 of the rows; nothing lies above the maximum.
    assert max(spec["counts"][1:-1]) <= 4950 / drift.NUMERIC_BINS + 2
    assert spec["counts"][-1] == 0
    assert spec["std"] == pytest.approx(np.nanstd(values))


def test_binning_new_values_puts_values_beyond_the_reference_in_the_open_ends() -> None:
    spec = _numeric(np.arange(100, dtype=float))
    histogram = _current(spec, np.array([-5.0, 0.0, 50.0, 99.0, 1000.0, np.nan]))
    assert histogram.counts[0] == 2  # -5 and the minimum itself
    assert histogram.counts[-1] == 1
    assert histogram.missing == 1
    assert histogram.sums is not None
    assert histogram.sums[-1] == 1000.0


def _as_counted(histogram: drift_bins.Histogram, *, numeric: bool) -> dict[int, tuple[int, float]]:
    counted = {
        int(i): (
            int(histogram.counts[i]),
            float(histogram.sums[i]) if numeric and histogram.sums is not None else 0.0,
        )
        for i in np.flatnonzero(histogram.counts)
    }
    if histogram.missing:
        counted[drift_bins.MISSING_BIN] = (histogram.missing, 0.0)
    return counted


_EDGES = Binner.of(_numeric(np.array([0.0, 0.0, 1.0, 2.5, 2.5, 7.0, 100.0, 1e9])))


@given(
    st.lists(
        st.one_of(
            st.floats(allow_nan=True, allow_infinity=True),
            st.sampled_from([0.0, 1.0, 2.5, 7.0, 100.0, 1e9, -0.0]),  # the edges themselves
        ),
        max_size=drift_bins.FEW_VALUES,
    )
)
def test_a_few_numbers_fall_in_the_bins_and_sums_numpy_gives_them(values: list[float]) -> None:
    numbers = np.array(values, dtype="float64")
    assert _EDGES.bin_few(numbers) == _as_counted(_EDGES.bin(numbers), numeric=True)


_CATEGORIES = Binner.of(_categorical(np.array(["a"] * 5 + ["b"] * 3 + ["c"], dtype=object)))


@given(st.lists(st.sampled_from(["a", "b", "c", "", "never seen", "A"]), max_size=drift_bins.FEW_VALUES))
def test_a_few_categories_fall_in_the_bins_numpy_gives_them(values: list[str]) -> None:
    texts = np.array(values, dtype=object)
    assert _CATEGORIES.bin_few(texts) == _as_counted(_CATEGORIES.bin(texts), numeric=False)


def test_a_categorical_profile_keeps_the_top_categories_and_bins_unknown_ones_as_other() -> None:
    values = np.array(["a"] * 50 + ["b"] * 30 + [f"rare{i}" for i in range(40)] + [""] * 5, dtype=object)
    spec = _categorical(values)
    assert spec["categories"][:2] == ["a", "b"]
    assert len(spec["categories"]) == drift.TOP_CATEGORIES
    assert spec["missing"] == 5
    histogram = _current(spec, np.array(["a", "never seen", ""], dtype=object))
    assert histogram.counts[0] == 1
    assert histogram.counts[-1] == 1
    assert histogram.missing == 1


def test_a_numeric_column_with_few_values_is_binned_per_value_and_tested_as_categorical() -> None:
    rng = np.random.default_rng(1)
    spec = _numeric(rng.integers(0, 3, 500).astype(float))
    assert spec["discrete"]
    assert len(spec["counts"]) == 3
    result = column_drift(spec, _current(spec, rng.integers(0, 3, 200).astype(float)))
    assert result["test"] == drift.CHI_SQUARE


@pytest.mark.parametrize("shift", [0.0, 0.3, 1.0])
def test_binned_ks_is_within_its_stated_bound_of_scipys_on_the_raw_samples(shift: float) -> None:
    rng = np.random.default_rng(2)
    reference, current = rng.normal(size=800), rng.normal(shift, 1.0, size=300)
    spec = _numeric(reference)
    histogram = _current(spec, current)
    binned, _ = drift.ks_binned(np.asarray(spec["counts"]), histogram.counts)
    raw = stats.ks_2samp(reference, current).statistic
    largest_bin = max(np.max(spec["counts"]) / 800, np.max(histogram.counts) / 300)
    assert binned <= raw + 1e-12
    assert raw <= binned + largest_bin


def test_the_ks_p_value_is_scipys_asymptotic_one_for_the_same_statistic() -> None:
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=400), rng.normal(0.2, 1.0, size=250)
    scipy_result = stats.ks_2samp(a, b, method="asymp")
    assert drift.ks_p_value(scipy_result.statistic, n=400, m=250) == pytest.approx(
        scipy_result.pvalue, rel=1e-9
    )


@pytest.mark.parametrize("shift", [0.0, 0.2, 1.0, 3.0])
def test_binned_wasserstein_is_within_half_the_widest_inner_bin_of_scipys(shift: float) -> None:
    rng = np.random.default_rng(4)
    reference, current = rng.normal(size=20_000), rng.normal(shift, 1.2, size=20_000)
    spec = _numeric(reference)
    histogram = _current(spec, current)
    binned = drift.wasserstein_binned(drift.reference_histogram(spec), histogram, reference_std=spec["std"])
    raw = stats.wasserstein_distance(reference, current) / np.std(reference)
    widest = np.max(np.diff(spec["edges"])) / spec["std"]
    assert abs(binned - raw) <= widest / 2
    # In practice far closer than the bound: within 0.02 of a standard deviation.
    assert binned == pytest.approx(raw, abs=0.02)


def test_chi_square_and_jensen_shannon_on_categories_equal_scipys_on_the_raw_counts() -> None:
    rng = np.random.default_rng(5)
    reference = rng.choice(np.array(["a", "b", "c"], dtype=object), 3000, p=[0.5, 0.3, 0.2])
    current = rng.choice(np.array(["a", "b", "c"], dtype=object), 2000, p=[0.4, 0.3, 0.3])
    spec = _categorical(reference)
    histogram = _current(spec, current)
    ref_counts = pd.Series(reference).value_counts()[spec["categories"]].to_numpy()
    cur_counts = pd.Series(current).value_counts()[spec["categories"]].to_numpy()
    statistic, p_value = drift.chi_square(np.asarray(spec["counts"]), histogram.counts)
    expected = stats.chi2_contingency(np.vstack([ref_counts, cur_counts]), correction=False)
    assert statistic == pytest.approx(expected.statistic)
    assert p_value == pytest.approx(expected.pvalue)
    js = drift.jensen_shannon(np.asarray(spec["counts"]), histogram.counts)
    assert js == pytest.approx(distance.jensenshannon(ref_counts / 3000, cur_counts / 2000))


def test_psi_is_zero_for_identical_shares_and_grows_with_the_shift() -> None:
    assert drift.psi(np.array([10, 20, 30]), np.array([1, 2, 3])) == pytest.approx(0.0)
    assert drift.psi(np.array([10, 20, 30]), np.array([30, 20, 10])) > drift.PSI_THRESHOLD


@pytest.mark.parametrize(
    ("n_reference", "n_current", "numeric_test", "categorical_test"),
    [(5000, 200, drift.KS, drift.CHI_SQUARE), (20_000, 5000, drift.WASSERSTEIN, drift.JENSEN_SHANNON)],
)
def test_drift_is_flagged_on_a_shifted_sample_and_not_on_an_unshifted_one_at_small_and_large_sizes(
    n_reference: int, n_current: int, numeric_test: str, categorical_test: str
) -> None:
    rng = np.random.default_rng(6)
    categories = np.array(["a", "b", "c", "d"], dtype=object)
    frame = pd.DataFrame(
        {
            "x": rng.normal(size=n_reference),
            "c": rng.choice(categories, n_reference, p=[0.4, 0.3, 0.2, 0.1]),
        }
    )
    schema = [{"name": "x", "kind": "numeric"}, {"name": "c", "kind": "categorical"}]
    profile = drift.reference_profile_build(
        X_train=frame,
        feature_schema=schema,
        task="classification",
        classes=None,
        holdout_predictions=None,
        holdout_probabilities=None,
        y_holdout=None,
    )
    binners = {spec["name"]: Binner.of(spec) for spec in profile["features"]}

    def verdict(x: np.ndarray, c: np.ndarray) -> drift.DatasetDrift:
        current = {"x": binners["x"].bin(x), "c": binners["c"].bin(c)}
        return drift.dataset_drift(profile, current, share_threshold=0.5)

    same = verdict(rng.normal(size=n_current), rng.choice(categories, n_current, p=[0.4, 0.3, 0.2, 0.1]))
    assert [f["test"] for f in same.features] == [numeric_test, categorical_test]
    assert not any(f["drifted"] for f in same.features)
    assert not same.drifting

    shifted = verdict(
        rng.normal(0.6, 1.0, size=n_current), rng.choice(categories, n_current, p=[0.1, 0.2, 0.3, 0.4])
    )
    assert all(f["drifted"] for f in shifted.features)
    assert shifted.drifting
    assert shifted.share == 1.0
    assert all(f["psi"] > drift.PSI_THRESHOLD for f in shifted.features)


def test_a_feature_with_too_few_current_rows_is_not_tested() -> None:
    spec = _numeric(np.random.default_rng(7).normal(size=1000))
    result = column_drift(spec, _current(spec, np.array([5.0] * (drift.MIN_ROWS - 1))))
    assert result["test"] is None
    assert not result["drifted"]
    assert "fewer than" in result["reason"]


def test_binning_costs_microseconds_per_row() -> None:
    import time

    rng = np.random.default_rng(8)
    spec = _numeric(rng.normal(size=10_000))
    binner = Binner.of(spec)
    values = rng.normal(size=100_000)
    started = time.perf_counter()
    binner.bin(values)
    assert (time.perf_counter() - started) / len(values) < 2e-6
