"""Example rows for the predict form: real holdout rows, or typical values from a reference profile."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ml.drift import column_spec
from ml.examples import example_rows_pick, example_text, typical_row

SCHEMA = [{"name": "age", "kind": "numeric"}, {"name": "city", "kind": "categorical"}]


def test_rows_are_picked_by_the_seed_with_missing_values_as_none():
    frame = pd.DataFrame(
        {"age": [30.0, np.nan, 41.5, 52.0, 18.0, 60.0, 25.0], "city": ["a", "b", "", "a", "c", "b", "a"]}
    )

    rows = example_rows_pick(frame, SCHEMA, count=7, seed=3)

    assert rows == [
        {"age": 30.0, "city": "a"},
        {"age": None, "city": "b"},
        {"age": 41.5, "city": None},
        {"age": 52.0, "city": "a"},
        {"age": 18.0, "city": "c"},
        {"age": 60.0, "city": "b"},
        {"age": 25.0, "city": "a"},
    ]
    assert example_rows_pick(frame, SCHEMA, count=3, seed=3) == example_rows_pick(
        frame, SCHEMA, count=3, seed=3
    )
    assert example_rows_pick(frame, SCHEMA, count=3, seed=3) != example_rows_pick(
        frame, SCHEMA, count=3, seed=4
    )
    assert len(example_rows_pick(frame.head(2), SCHEMA, count=5)) == 2
    assert example_rows_pick(frame.head(0), SCHEMA) == []


def test_a_typical_row_takes_the_median_bin_and_the_most_frequent_category():
    children = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2, 3, 7], dtype=float)
    income = np.linspace(1000.0, 9000.0, 401)
    cities = np.array(["paris"] * 2 + ["lyon"] * 5 + ["nice"] * 3, dtype=object)
    profile = {
        "features": [
            column_spec(children, name="children", kind="numeric"),
            column_spec(income, name="income", kind="numeric"),
            column_spec(cities, name="city", kind="categorical"),
        ]
    }

    row = typical_row(profile)

    # A discrete feature gets a value seen in training: its median, 2.
    assert row["children"] == 2.0
    assert row["income"] == pytest.approx(5000.0, rel=0.01)
    assert row["city"] == "lyon"
    assert typical_row(None) is None
    assert typical_row({"features": []}) is None


def test_values_are_shown_in_their_shortest_exact_form():
    assert example_text(None) == ""
    assert example_text(3.0) == "3"
    assert example_text(17.99) == "17.99"
    assert example_text(0.1 + 0.2) == "0.30000000000000004"
    assert example_text(1e20) == "1e+20"
    assert example_text("lyon") == "lyon"
