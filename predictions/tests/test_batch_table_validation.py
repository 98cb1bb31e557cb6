"""Tests of table_validate: a chunk of text cells checked by the rules of a single prediction, per column."""

from __future__ import annotations

import json
import math

import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from predictions.batch import table_validation
from predictions.batch.table_validation import table_validate

SCHEMA = [
    {"name": "age", "kind": "numeric", "min": 18.0, "max": 80.0},
    {"name": "city", "kind": "categorical", "categories": ["Berlin", "Paris"]},
    {"name": "grade", "kind": "categorical", "categories": ["1", "2", "3"]},
]


def check(rows: list[dict[str, str]]):
    names = list(rows[0])
    return table_validate(
        table=pa.table({n: pa.array([r[n] for r in rows], pa.string()) for n in names}), feature_schema=SCHEMA
    )


def row(age: str = "40", city: str = "Paris", grade: str = "2", **extra: str) -> dict[str, str]:
    return {"age": age, "city": city, "grade": grade, **extra}


def errors_of(result) -> list[tuple[int, str, str]]:
    e = result.errors
    return list(zip(e["position"].tolist(), e["field"].tolist(), e["code"].tolist(), strict=True))


def test_valid_rows_become_model_arrays_in_schema_order():
    result = check([row(), row(age=" 19.5 ", city="Berlin", grade="3")])

    assert result.valid.tolist() == [True, True]
    assert result.columns["age"].tolist() == [40.0, 19.5]
    assert result.columns["city"].tolist() == ["Paris", "Berlin"]
    assert result.columns["grade"].tolist() == ["2", "3"]
    assert result.warnings_json.tolist() == ["[]", "[]"]
    assert result.warnings_text.tolist() == ["", ""]
    assert result.n_errors == 0


def test_text_in_a_numeric_column_is_a_wrong_type_naming_the_value():
    result = check([row(age="forty"), row(age="True"), row(age="0x10"), row()])

    assert errors_of(result) == [(0, "age", "wrong_type"), (1, "age", "wrong_type"), (2, "age", "wrong_type")]
    assert result.errors["message"][0] == "'age' must be a number; got 'forty'."
    assert result.valid.tolist() == [False, False, False, True]
    assert result.columns["age"].tolist() == [40.0]


def test_nan_and_infinity_written_out_are_refused():
    spellings = ["nan", "NaN", "-nan", "inf", "-Infinity", "1e999", "1.#IND", "-1.#QNAN"]

    result = check([row(age=s) for s in spellings])

    assert errors_of(result) == [(i, "age", "not_finite") for i in range(len(spellings))]
    assert result.errors["message"][3] == (
        "'age' must be a finite number; got 'inf'. Leave the cell empty for a missing value."
    )
    assert result.n_valid == 0


def test_empty_cells_and_na_markers_are_missing_values_with_a_warning():
    result = check([row(age="", city="NA"), row(age="  ", grade="null"), row(age="N/A", city="")])

    assert result.valid.all()
    assert all(math.isnan(v) for v in result.columns["age"])
    assert result.columns["city"].tolist() == ["", "Paris", ""]
    assert result.columns["grade"].tolist() == ["2", "", "2"]
    assert result.warnings_text.tolist() == [
        "age: missing_value; city: missing_value",
        "age: missing_value; grade: missing_value",
        "age: missing_value; city: missing_value",
    ]
    first = json.loads(result.warnings_json[0])
    assert first[0] == {
        "field": "age",
        "code": "missing_value",
        "message": "'age' is empty; the model filled it in as it did for missing training values.",
    }


def test_out_of_range_numbers_and_unknown_categories_are_predicted_with_warnings():
    result = check([row(age="95"), row(city='Lyon "centre"'), row(age="-1e2")])

    assert result.valid.all()
    assert result.warnings_text.tolist() == [
        "age: out_of_range",
        "city: unknown_category",
        "age: out_of_range",
    ]
    assert json.loads(result.warnings_json[0]) == [
        {
            "field": "age",
            "code": "out_of_range",
            "message": "'age' = 95 is outside the training range (18 to 80); "
            "the prediction is an extrapolation.",
        }
    ]
    assert json.loads(result.warnings_json[1])[0]["message"] == (
        "'city' = 'Lyon \"centre\"' was not seen in training; "
        "the model treats it as none of the known categories."
    )


def test_categories_written_as_numbers_are_read_as_training_read_them():
    result = check([row(grade="2.0"), row(grade="03"), row(grade="2.5"), row(city="1.0")])

    assert result.columns["grade"].tolist() == ["2", "3", "2.5", "2"]
    # Text categories stay as written.
    assert result.columns["city"].tolist()[3] == "1.0"
    assert result.warnings_text.tolist() == ["", "", "grade: unknown_category", "city: unknown_category"]


def test_columns_that_are_not_features_are_ignored():
    result = check([row(note="anything, at all"), row(note="")])

    assert result.valid.all()
    assert set(result.columns) == {"age", "city", "grade"}


def test_long_offending_values_are_cut_in_messages_but_kept_whole():
    value = "x" * 100

    result = check([row(age=value)])

    assert result.errors["message"][0] == f"'age' must be a number; got '{'x' * 37}...'."
    assert result.errors["value"][0] == value


number_cells = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(min_value=-(10**40), max_value=10**40).map(str),
    st.sampled_from(["", "NA", "null", " 40 ", "\t7", "nan", "-inf", "Infinity", "1.#IND", "abc", "1e999"]),
)


@settings(max_examples=200, deadline=None)
@given(cells=st.lists(number_cells, min_size=1, max_size=12))
def test_a_numeric_column_read_whole_is_checked_as_by_the_general_path(cells):
    """A column whose every cell Arrow reads as a number skips trimming and the missing-value lookup:
    the check is the same as the general path's."""
    table = pa.table({"age": pa.array(cells, pa.string())})
    schema = [SCHEMA[0]]

    fast = table_validate(table=table, feature_schema=schema)
    original = table_validation._numbers_as_written
    table_validation._numbers_as_written = lambda values: None
    try:
        general = table_validate(table=table, feature_schema=schema)
    finally:
        table_validation._numbers_as_written = original

    assert fast.valid.tolist() == general.valid.tolist()
    assert [None if math.isnan(v) else v for v in fast.columns["age"].tolist()] == [
        None if math.isnan(v) else v for v in general.columns["age"].tolist()
    ]
    listed = {k: v.tolist() for k, v in general.errors.items()}
    assert {k: v.tolist() for k, v in fast.errors.items()} == listed
    assert fast.warnings_json.tolist() == general.warnings_json.tolist()
    assert fast.warnings_text.tolist() == general.warnings_text.tolist()
