"""Feature kinds, the input preparation the Pipeline expects and the feature schema, without scikit-learn.

The Pipeline (ml.pipeline) selects columns by name and expects *prepared* inputs: numeric columns as float64
with NaN for missing (infinities count as missing), categorical columns as text with "" for missing.
Preparation happens outside the Pipeline (frame_prepare for training, columns_from_rows for predictions)
because the same arrays then feed scikit-learn and ONNX, and both paths see the same values. Categories are
canonical text so that 3, 3.0 and "3" are one category, whatever type the CSV reader or a JSON client
produced.

Text columns are not features: free text would need a vectoriser whose ONNX conversion supports only a
subset of tokenisers, so they are excluded and listed with the reason.

This module imports numpy and pandas only: forms, validation and drift code use it in every process, which
then starts without loading scikit-learn.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from ml.errors import PredictionInputError, TrainingInputError

NUMERIC = "numeric"
CATEGORICAL = "categorical"
TEXT = "text"
KINDS = (NUMERIC, CATEGORICAL, TEXT)
FEATURE_KINDS = (NUMERIC, CATEGORICAL)

MISSING_CATEGORY = ""
# What a missing category becomes inside the Pipeline: its own one-hot column.
MISSING_CATEGORY_FILL = "(missing)"


def category_text(value: Any) -> str:
    """Canonical text for one categorical value; missing values become ""."""
    if value is None:
        return MISSING_CATEGORY
    if isinstance(value, bool | np.bool_):
        return "True" if value else "False"
    if isinstance(value, float | np.floating):
        if math.isnan(value):
            return MISSING_CATEGORY
        if math.isfinite(value) and float(value).is_integer():
            return str(int(value))
        return str(float(value))
    if isinstance(value, np.integer):
        return str(int(value))
    if value is pd.NA or value is pd.NaT:
        return MISSING_CATEGORY
    return str(value)


def numeric_value(value: Any) -> float:
    """A float for one numeric value; None, NaN and infinities become NaN. Raises ValueError otherwise."""
    if value is None or value is pd.NA:
        return math.nan
    if isinstance(value, bool | np.bool_):
        raise ValueError(f"expected a number, got {value!r}")
    if isinstance(value, str):
        if not value.strip():
            return math.nan
        number = float(value)
    elif isinstance(value, int | float | np.integer | np.floating):
        number = float(value)
    else:
        raise ValueError(f"expected a number, got {value!r}")
    return number if math.isfinite(number) else math.nan


def feature_columns_select(
    *, schema_columns: list[dict[str, Any]], target_column: str | None = None
) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """Split schema columns into features and excluded columns (each excluded one with a reason)."""
    if not isinstance(schema_columns, list) or not schema_columns:
        raise TrainingInputError("The dataset schema has no columns.")
    seen: set[str] = set()
    features: list[dict[str, str]] = []
    excluded: list[dict[str, str]] = []
    for column in schema_columns:
        if not isinstance(column, dict) or not isinstance(column.get("name"), str):
            raise TrainingInputError(f"Each schema column needs a text 'name'; got {column!r}.")
        name, kind = column["name"], column.get("kind")
        if kind not in KINDS:
            raise TrainingInputError(
                f"Column '{name}' has kind {kind!r}; expected one of: {', '.join(KINDS)}."
            )
        if name in seen:
            raise TrainingInputError(f"Column '{name}' appears twice in the schema.")
        seen.add(name)
        if name == target_column:
            continue
        if kind == TEXT:
            excluded.append({"name": name, "reason": "text columns are not used as features"})
        else:
            features.append({"name": name, "kind": kind})
    return features, excluded


def frame_prepare(frame: pd.DataFrame, feature_columns: list[dict[str, str]]) -> pd.DataFrame:
    """The feature columns of frame, in schema order, with the types the Pipeline expects."""
    missing = [c["name"] for c in feature_columns if c["name"] not in frame.columns]
    if missing:
        raise TrainingInputError(
            f"Feature column(s) not in the data: {', '.join(missing)}. "
            f"The data has: {', '.join(map(str, frame.columns))}."
        )
    prepared: dict[str, Any] = {}
    for column in feature_columns:
        name = column["name"]
        series = frame[name]
        if column["kind"] == NUMERIC:
            try:
                numbers = pd.to_numeric(series, errors="raise").astype("float64")
            except (ValueError, TypeError) as exc:
                raise TrainingInputError(
                    f"Numeric column '{name}' holds a value that is not a number: {exc}"
                ) from exc
            prepared[name] = numbers.where(np.isfinite(numbers), np.nan).to_numpy(dtype="float64")
        else:
            # Kept as object: pandas would infer its str dtype, which scikit-learn converts back to an
            # object array in every validation, fit and transform.
            prepared[name] = pd.Series(category_texts(series), index=frame.index, dtype=object)
    return pd.DataFrame(prepared, index=frame.index)


def distinct_values_keep_types(series: pd.Series) -> bool:
    """Whether values that compare equal are alike, so text made from one distinct value fits all its copies.

    Not so for mixed Python objects: True, 1 and 1.0 are equal (one hash bucket) but read "True", "1", "1.0".
    """
    dtype = series.dtype
    if isinstance(dtype, pd.CategoricalDtype):
        return True
    if not pd.api.types.is_object_dtype(dtype):
        return pd.api.types.is_string_dtype(dtype) or pd.api.types.is_numeric_dtype(dtype)
    return pd.api.types.infer_dtype(series, skipna=True) in ("string", "empty")


def category_texts(series: pd.Series) -> np.ndarray:
    """category_text of every value (an object array), computed once per distinct value when that is safe."""
    if not distinct_values_keep_types(series):
        return np.array([category_text(v) for v in series.tolist()], dtype=object)
    codes, uniques = pd.factorize(series, use_na_sentinel=True)
    # Missing values get code -1, which picks the last entry.
    texts = np.array([category_text(v) for v in uniques.tolist()] + [MISSING_CATEGORY], dtype=object)
    return texts[codes]


def columns_from_rows(
    rows: list[dict[str, Any]], feature_schema: list[dict[str, Any]]
) -> dict[str, np.ndarray]:
    """One 1-D array per feature column (float64 or text), straight from request rows, without pandas.

    A column absent from a row counts as missing, like an empty cell; keys that are not features are ignored.
    """
    if not isinstance(rows, list) or not rows:
        raise PredictionInputError("Send at least one row.")
    for position, row in enumerate(rows):
        if not isinstance(row, dict):
            raise PredictionInputError(f"Row {position + 1} must be a mapping of column names to values.")
    columns: dict[str, np.ndarray] = {}
    for column in feature_schema:
        name = column["name"]
        if column["kind"] == NUMERIC:
            values = np.empty(len(rows), dtype="float64")
            for position, row in enumerate(rows):
                try:
                    values[position] = numeric_value(row.get(name))
                except ValueError as exc:
                    raise PredictionInputError(f"Row {position + 1}, column '{name}': {exc}.") from exc
        else:
            values = np.array([category_text(row.get(name)) for row in rows], dtype=object)
        columns[name] = values
    return columns


def columns_from_frame(frame: pd.DataFrame, feature_schema: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    """The same arrays as columns_from_rows, from a frame already passed through frame_prepare."""
    return {
        c["name"]: frame[c["name"]].to_numpy(dtype="float64" if c["kind"] == NUMERIC else object)
        for c in feature_schema
    }


def feature_schema_build(frame: pd.DataFrame, feature_columns: list[dict[str, str]]) -> list[dict[str, Any]]:
    """Describe each feature from prepared training rows: numeric range seen, or categories seen."""
    schema: list[dict[str, Any]] = []
    for column in feature_columns:
        name, kind = column["name"], column["kind"]
        series = frame[name]
        entry: dict[str, Any] = {
            "name": name,
            "kind": kind,
            "dtype": "float64" if kind == NUMERIC else "string",
        }
        if kind == NUMERIC:
            values = series.to_numpy(dtype="float64")
            missing = np.isnan(values)
            present = values[~missing]
            entry["min"] = float(present.min()) if len(present) else None
            entry["max"] = float(present.max()) if len(present) else None
            entry["missing_count"] = int(missing.sum())
        else:
            entry["categories"] = sorted(v for v in pd.unique(series.to_numpy()) if v != MISSING_CATEGORY)
            entry["missing_count"] = int((series == MISSING_CATEGORY).sum())
        schema.append(entry)
    return schema
