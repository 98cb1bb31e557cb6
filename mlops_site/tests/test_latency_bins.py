"""Tests of the latency histograms' bins and of percentiles read from counts per bin."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlops_site import latency_bins as latency

#: One bin's width as a ratio: a percentile read from the histogram is within it of the exact one.
BIN_RATIO = 2 ** (1 / latency.BINS_PER_DOUBLING)


@pytest.mark.parametrize(
    ("milliseconds", "expected"),
    [
        (0.0, 0),
        (-3.0, 0),
        (math.nan, 0),
        (math.inf, 0),
        (0.1, 0),
        (0.25, 1),
        (1e9, len(latency.EDGES_MS) - 1),
    ],
)
def test_extremes_fall_in_the_first_or_the_open_last_bin(milliseconds, expected):
    assert latency.latency_bin(milliseconds) == expected


@settings(max_examples=200, deadline=None)
@given(st.floats(min_value=0.0001, max_value=200_000, allow_nan=False))
def test_a_latency_falls_in_the_bin_whose_edges_hold_it(milliseconds):
    index = latency.latency_bin(milliseconds)

    assert latency.EDGES_MS[index] <= milliseconds
    if index + 1 < len(latency.EDGES_MS):
        assert milliseconds < latency.EDGES_MS[index + 1]


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.floats(min_value=0.3, max_value=100_000, allow_nan=False), min_size=1, max_size=300),
    st.sampled_from([1, 50, 90, 95, 99, 100]),
)
def test_a_percentile_from_the_histogram_is_within_one_bin_of_the_exact_one(values, q):
    counts = Counter(latency.latency_bin(v) for v in values)

    estimate = latency.percentile(counts, q)
    # The exact value by the same rank rule: the smallest value with at least q% of them at or below it.
    exact = sorted(values)[max(0, math.ceil(len(values) * q / 100) - 1)]

    assert exact / BIN_RATIO <= estimate <= exact * BIN_RATIO


def test_percentiles_of_a_lognormal_sample_are_within_a_few_per_cent():
    values = np.random.default_rng(4).lognormal(mean=1.5, sigma=0.8, size=20_000)
    counts = Counter(latency.latency_bin(v) for v in values)

    for q, estimate in latency.percentiles(counts).items():
        assert estimate == pytest.approx(np.percentile(values, q), rel=0.03)


def test_no_counts_have_no_percentile():
    assert latency.percentile({}, 50) is None
    assert latency.percentile({3: 0}, 99) is None
