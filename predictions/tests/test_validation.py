"""Tests of row validation: every problem named per row and field, warnings kept, arrays in schema order."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from predictions import validation
from predictions.validation import RowsInvalid, rows_validate

SCHEMA = [
    {"name": "age", "kind": "numeric", "dtype": "float64", "min": 18.0, "max": 80.0},
    {"name": "city", "kind": "categorical", "dtype": "string", "categories": ["Berlin", "Paris"]},
    {"name": "zone", "kind": "categorical", "dtype": "string", "categories": ["1", "2"]},
]


def good_row(**changes):
    return {"age": 30, "city": "Paris", "zone": 2, **changes}


def errors_of(rows, *, max_rows=100):
    with pytest.raises(RowsInvalid) as caught:
        rows_validate(rows=rows, feature_schema=SCHEMA, max_rows=max_rows)
    return caught.value.errors


def test_it_returns_one_array_per_feature_in_schema_order():
    result = rows_validate(
        rows=[good_row(), {"zone": 1.0, "city": "Berlin", "age": "41.5"}], feature_schema=SCHEMA, max_rows=10
    )

    assert list(result.columns) == ["age", "city", "zone"]
    assert result.columns["age"].dtype == np.float64
    assert result.columns["age"].tolist() == [30.0, 41.5]
    assert result.columns["city"].tolist() == ["Paris", "Berlin"]
    # Whole numbers are one category whatever their JSON type, as in training.
    assert result.columns["zone"].tolist() == ["2", "1"]
    assert result.inputs == [
        {"age": 30.0, "city": "Paris", "zone": "2"},
        {"age": 41.5, "city": "Berlin", "zone": "1"},
    ]
    assert result.warnings == [[], []]


def test_it_names_a_missing_feature():
    row = good_row()
    del row["city"]

    # Rows count from 1, as in a batch job's errors file: the second row sent is row 2.
    assert errors_of([good_row(), row]) == [
        {"row": 2, "field": "city", "code": "missing_feature", "message": "'city' is missing."}
    ]


def test_it_names_an_unknown_field_and_lists_the_features():
    (error,) = errors_of([good_row(agee=3)])

    assert (error["row"], error["field"], error["code"]) == (1, "agee", "unknown_field")
    assert "age, city, zone" in error["message"]


@pytest.mark.parametrize("value", ["thirty", True, {"years": 30}, [30], "12abc"])
def test_it_rejects_a_numeric_feature_of_the_wrong_type(value):
    (error,) = errors_of([good_row(age=value)])

    assert (error["row"], error["field"], error["code"]) == (1, "age", "wrong_type")
    assert "must be a number" in error["message"]


@pytest.mark.parametrize("value", [{"a": 1}, [1], False])
def test_it_rejects_a_categorical_feature_of_the_wrong_type(value):
    (error,) = errors_of([good_row(city=value)])

    assert (error["field"], error["code"]) == ("city", "wrong_type")


@pytest.mark.parametrize(
    "value", [math.nan, math.inf, -math.inf, "nan", "NaN", "inf", "-Infinity", "1e999", 10**400]
)
def test_it_rejects_nan_and_infinity(value):
    (error,) = errors_of([good_row(age=value)])

    assert (error["row"], error["field"], error["code"]) == (1, "age", "not_finite")


def test_it_rejects_nan_given_for_a_category():
    (error,) = errors_of([good_row(zone=math.nan)])

    assert (error["field"], error["code"]) == ("zone", "not_finite")


def test_it_accepts_an_unknown_category_with_a_warning():
    result = rows_validate(rows=[good_row(city="Oslo")], feature_schema=SCHEMA, max_rows=10)

    assert result.columns["city"].tolist() == ["Oslo"]
    (warning,) = result.warnings[0]
    assert (warning["field"], warning["code"]) == ("city", "unknown_category")
    assert "Oslo" in warning["message"]


@pytest.mark.parametrize(
    ("age", "flagged"), [(17.9, True), (18, False), (80, False), (80.5, True), (-5, True)]
)
def test_it_accepts_an_out_of_range_number_and_flags_it(age, flagged):
    result = rows_validate(rows=[good_row(age=age)], feature_schema=SCHEMA, max_rows=10)

    codes = [w["code"] for w in result.warnings[0]]
    assert codes == (["out_of_range"] if flagged else [])
    if flagged:
        assert "18 to 80" in result.warnings[0][0]["message"]


def test_it_treats_null_and_empty_text_as_missing_values_with_a_warning():
    result = rows_validate(rows=[good_row(age=None, city="")], feature_schema=SCHEMA, max_rows=10)

    assert math.isnan(result.columns["age"][0])
    assert result.columns["city"].tolist() == [""]
    assert result.inputs[0] == {"age": None, "city": None, "zone": "2"}
    assert [w["code"] for w in result.warnings[0]] == ["missing_value", "missing_value"]


def test_it_refuses_more_rows_than_the_limit_and_names_the_limit():
    (error,) = errors_of([good_row()] * 4, max_rows=3)

    assert error["code"] == validation.TOO_MANY_ROWS
    assert "at most 3 rows" in error["message"]


def test_it_accepts_exactly_the_row_limit():
    assert rows_validate(rows=[good_row()] * 3, feature_schema=SCHEMA, max_rows=3).n_rows == 3


@pytest.mark.parametrize(
    ("rows", "code"), [([], "no_rows"), ({"age": 3}, "not_an_object"), ("x", "not_an_object")]
)
def test_it_refuses_rows_that_are_not_a_non_empty_list(rows, code):
    (error,) = errors_of(rows)

    assert error["code"] == code


def test_it_reports_every_problem_of_every_row_in_row_order():
    errors = errors_of([good_row(zone=None, age="x"), 7, {"city": "Paris", "zone": 1, "extra": 1}])

    assert [(e["row"], e["field"], e["code"]) for e in errors] == [
        (1, "age", "wrong_type"),
        (2, None, "not_an_object"),
        (3, "extra", "unknown_field"),
        (3, "age", "missing_feature"),
    ]


@given(st.one_of(st.floats(), st.integers(min_value=-(10**400), max_value=10**400)))
@settings(max_examples=300, deadline=None)
def test_any_json_number_is_kept_exactly_or_refused_with_its_reason(age):
    try:
        result = rows_validate(rows=[good_row(age=age)], feature_schema=SCHEMA, max_rows=1)
    except RowsInvalid as refused:
        (problem,) = refused.errors
        assert problem["field"] == "age"
        # Beyond float64 (a float's NaN or infinity, or an integer float() cannot hold) is "not finite", as
        # "1e999" is; beyond float32 only, "too large".
        try:
            beyond_float64 = not math.isfinite(float(age))
        except OverflowError:
            beyond_float64 = True
        expected = validation.NOT_FINITE if beyond_float64 else validation.TOO_LARGE_NUMBER
        assert problem["code"] == expected
        return
    assert abs(age) <= validation.FLOAT32_MAX
    assert result.columns["age"].tolist() == [float(age)]
    assert result.inputs[0]["age"] == float(age)
    flagged = [w["code"] for w in result.warnings[0] if w["field"] == "age"]
    assert flagged == ([validation.OUT_OF_RANGE] if not 18.0 <= age <= 80.0 else [])


plain_labels = st.one_of(st.floats(), st.integers(), st.text(max_size=5), st.booleans())
probability_rows = st.one_of(st.none(), st.lists(st.floats(), min_size=1, max_size=4).map(lambda row: [row]))


@given(plain_labels, probability_rows)
@settings(max_examples=300, deadline=None)
def test_one_row_is_found_finite_or_not_as_numpy_finds_it_for_many(label, probabilities):
    # A tuple of labels takes the numpy path the batch of many rows takes.
    expected = validation.not_finite_rows((label,), probabilities).tolist()

    assert validation.not_finite_rows([label], probabilities).tolist() == expected
