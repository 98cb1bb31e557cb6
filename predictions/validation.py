"""Input rows of a prediction request checked per row and field, and turned into model arrays; the codes."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ml.features import NUMERIC, category_text
from predictions.errors import InputInvalid

# Error codes: the request is refused and nothing is stored.
NO_ROWS = "no_rows"
TOO_MANY_ROWS = "too_many_rows"
NOT_AN_OBJECT = "not_an_object"
MISSING_FEATURE = "missing_feature"
UNKNOWN_FIELD = "unknown_field"
WRONG_TYPE = "wrong_type"
NOT_FINITE = "not_finite"
TOO_LARGE_NUMBER = "too_large_number"
TOO_LONG_TEXT = "too_long_text"
#: A row the model gave NaN or infinity for (inputs within range can still overflow inside a model).
NOT_FINITE_OUTPUT = "not_finite_output"
NOT_FINITE_OUTPUT_MESSAGE = (
    "The model gave no finite prediction for this row (NaN or infinity); nothing was stored for it."
)
# Warning codes: the row is predicted and the warning is stored with it.
MISSING_VALUE = "missing_value"
UNKNOWN_CATEGORY = "unknown_category"
OUT_OF_RANGE = "out_of_range"

#: Largest magnitude a feature may have: models compute in float32 (ONNX, scikit-learn's trees), where
#: anything larger becomes infinity and the prediction NaN.
FLOAT32_MAX = float(np.finfo(np.float32).max)
#: Default for settings.PREDICTION_MAX_TEXT_CHARS: a category or text value stored with every row.
DEFAULT_MAX_TEXT_CHARS = 1000

_NOT_FINITE_TEXT = {"nan", "+nan", "-nan", "inf", "+inf", "-inf", "infinity", "+infinity", "-infinity"}


@dataclass(frozen=True)
class ValidatedRows:
    """Model-ready arrays (one per feature, schema order) plus what is stored for each row."""

    columns: dict[str, np.ndarray]
    # Per row: the features as stored (numbers as float, categories as canonical text, None if missing).
    inputs: list[dict[str, Any]]
    warnings: list[list[dict[str, str]]]

    @property
    def n_rows(self) -> int:
        return len(self.inputs)


class RowsInvalid(InputInvalid):
    """The rows were refused; `errors` lists every problem as {row, field, code, message}, rows from 1."""


def _issue(index: int | None, name: str | None, code: str, message: str) -> dict[str, Any]:
    """A problem of the row at 0-based `index`, numbered from 1 as in a batch job's errors file."""
    return {"row": None if index is None else index + 1, "field": name, "code": code, "message": message}


def _describe(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list | tuple):
        return "a list"
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _number(value: Any) -> float:
    """The float for a numeric input; raises TypeError (wrong type) or ValueError (NaN, infinity)."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise TypeError
    if isinstance(value, str):
        text = value.strip()
        if text.lower() in _NOT_FINITE_TEXT:
            raise ValueError
        try:
            number = float(text)
        except ValueError:
            raise TypeError from None
    else:
        try:
            number = float(value)
        except OverflowError:
            raise ValueError from None
    if not math.isfinite(number):
        raise ValueError
    return number


# What a model's answer holds once made plain (ml.predictor): only float labels can be NaN or infinite.
_PLAIN_LABELS = frozenset({float, int, str, bool})


def not_finite_rows(labels: Any, probabilities: Any) -> np.ndarray:
    """0-based positions of rows whose prediction or probabilities are NaN or infinite: never stored."""
    if isinstance(labels, list) and len(labels) == 1:
        # One row of plain values (a single prediction): checked in plain Python, the same way, since
        # numpy's fixed costs were most of this check.
        label = labels[0]
        row = probabilities[0] if probabilities is not None and len(probabilities) else []
        if type(label) in _PLAIN_LABELS and isinstance(row, list) and all(type(p) is float for p in row):
            finite = (type(label) is not float or math.isfinite(label)) and all(map(math.isfinite, row))
            return np.empty(0, dtype=np.intp) if finite else np.zeros(1, dtype=np.intp)
    bad = np.zeros(len(labels), dtype=bool)
    if probabilities is not None and len(probabilities):
        bad |= ~np.isfinite(np.asarray(probabilities, dtype="float64")).all(axis=1)
    numbers = np.asarray(labels)
    if numbers.dtype.kind == "f":
        bad |= ~np.isfinite(numbers)
    return np.flatnonzero(bad)


def range_text(low: float | None, high: float | None) -> str:
    return f"{low:g} to {high:g}"


def too_large_suffix() -> str:
    return f" is beyond the largest number the model can represent (±{FLOAT32_MAX:.7g}, float32)."


def too_large_message(name: str, shown: str) -> str:
    return f"'{name}' = {shown}{too_large_suffix()}"


def _out_of_range(name: str, number: float, low: float | None, high: float | None) -> dict[str, str]:
    return {
        "field": name,
        "code": OUT_OF_RANGE,
        "message": f"'{name}' = {number:g} is outside the training range ({range_text(low, high)}); the "
        "prediction is an extrapolation.",
    }


def too_long_message(name: str, length: int, limit: int) -> str:
    return f"'{name}' is {length} characters long; at most {limit} characters are accepted."


def rows_validate(
    *,
    rows: Any,
    feature_schema: list[dict[str, Any]],
    max_rows: int,
    max_text_chars: int = DEFAULT_MAX_TEXT_CHARS,
) -> ValidatedRows:
    """Check every row and field; raise RowsInvalid listing all problems, or return the model's arrays.

    A feature given as null (or an empty string) is missing: the pipeline imputes it, and the row gets a
    warning. An absent feature is an error, because a misspelt key would otherwise be silently imputed.
    """
    if not isinstance(rows, list):
        raise RowsInvalid([_issue(None, None, NOT_AN_OBJECT, "Send the rows as a list of objects.")])
    if not rows:
        raise RowsInvalid([_issue(None, None, NO_ROWS, "Send at least one row.")])
    if len(rows) > max_rows:
        raise RowsInvalid(
            [
                _issue(
                    None,
                    None,
                    TOO_MANY_ROWS,
                    f"{len(rows)} rows were sent; at most {max_rows} rows are accepted per request. "
                    "Split the rows over several requests or use a batch job.",
                )
            ]
        )
    names = [column["name"] for column in feature_schema]
    known = set(names)
    n = len(rows)
    errors: list[dict[str, Any]] = []
    inputs: list[dict[str, Any]] = [{} for _ in range(n)]
    warnings: list[list[dict[str, str]]] = [[] for _ in range(n)]
    columns: dict[str, np.ndarray] = {}
    for index, row in enumerate(rows):
        if not isinstance(row, dict):
            errors.append(
                _issue(
                    index,
                    None,
                    NOT_AN_OBJECT,
                    f"Each row must be an object of features; got {_describe(row)}.",
                )
            )
            continue
        for key in row:
            if key not in known:
                errors.append(
                    _issue(
                        index,
                        str(key),
                        UNKNOWN_FIELD,
                        f"'{key}' is not a feature of this model. The features are: {', '.join(names)}.",
                    )
                )
    for column in feature_schema:
        name = column["name"]
        is_numeric = column["kind"] == NUMERIC
        values = np.empty(n, dtype="float64" if is_numeric else object)
        low, high = column.get("min"), column.get("max")
        categories = column.get("categories")
        seen = set(categories) if categories else None
        for index, row in enumerate(rows):
            if not isinstance(row, dict):
                continue
            if name not in row:
                errors.append(_issue(index, name, MISSING_FEATURE, f"'{name}' is missing."))
                continue
            value = row[name]
            if value is None or (isinstance(value, str) and not value.strip()):
                values[index] = math.nan if is_numeric else ""
                inputs[index][name] = None
                warnings[index].append(
                    {
                        "field": name,
                        "code": MISSING_VALUE,
                        "message": f"'{name}' is empty; the model filled it in as it did for missing "
                        "training values.",
                    }
                )
                continue
            if is_numeric:
                # The usual case first: a JSON number the model can represent (NaN and infinities fail the
                # comparison and take the checks below).
                if type(value) is float and -FLOAT32_MAX <= value <= FLOAT32_MAX:
                    values[index] = value
                    inputs[index][name] = value
                    if (low is not None and value < low) or (high is not None and value > high):
                        warnings[index].append(_out_of_range(name, value, low, high))
                    continue
                try:
                    number = _number(value)
                except TypeError:
                    errors.append(
                        _issue(index, name, WRONG_TYPE, f"'{name}' must be a number; got {_describe(value)}.")
                    )
                    continue
                except ValueError:
                    errors.append(
                        _issue(
                            index,
                            name,
                            NOT_FINITE,
                            f"'{name}' must be a finite number; got {_describe(value)}. "
                            "Send null for a missing value.",
                        )
                    )
                    continue
                if abs(number) > FLOAT32_MAX:
                    message = too_large_message(name, _describe(value))
                    errors.append(_issue(index, name, TOO_LARGE_NUMBER, message))
                    continue
                values[index] = number
                inputs[index][name] = number
                if (low is not None and number < low) or (high is not None and number > high):
                    warnings[index].append(_out_of_range(name, number, low, high))
            else:
                if isinstance(value, bool) or not isinstance(value, str | int | float):
                    errors.append(
                        _issue(
                            index,
                            name,
                            WRONG_TYPE,
                            f"'{name}' must be a text or number category; got {_describe(value)}.",
                        )
                    )
                    continue
                if isinstance(value, float) and not math.isfinite(value):
                    errors.append(
                        _issue(
                            index,
                            name,
                            NOT_FINITE,
                            f"'{name}' must be a category; got {_describe(value)}. "
                            "Send null for a missing value.",
                        )
                    )
                    continue
                text = category_text(value)
                if len(text) > max_text_chars:
                    errors.append(
                        _issue(index, name, TOO_LONG_TEXT, too_long_message(name, len(text), max_text_chars))
                    )
                    continue
                values[index] = text
                inputs[index][name] = text
                if seen is not None and text not in seen:
                    warnings[index].append(
                        {
                            "field": name,
                            "code": UNKNOWN_CATEGORY,
                            "message": f"'{name}' = '{text}' was not seen in training; the model treats it "
                            "as none of the known categories.",
                        }
                    )
        columns[name] = values
    if errors:
        errors.sort(key=lambda e: e["row"] if e["row"] is not None else -1)
        raise RowsInvalid(errors)
    return ValidatedRows(columns=columns, inputs=inputs, warnings=warnings)
