"""A chunk of a batch CSV file checked column by column (Arrow compute), without a loop per row."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ml.pipeline import NUMERIC
from predictions.validation import (
    DEFAULT_MAX_TEXT_CHARS,
    FLOAT32_MAX,
    MISSING_VALUE,
    NOT_FINITE,
    OUT_OF_RANGE,
    TOO_LARGE_NUMBER,
    TOO_LONG_TEXT,
    UNKNOWN_CATEGORY,
    WRONG_TYPE,
    range_text,
    too_large_suffix,
    too_long_message,
)

#: Cells read as missing, like pandas' default NA markers (what training read as missing) except the
#: spellings of NaN, which are refused as in a single prediction.
NA_MARKERS = ("", "#N/A", "#N/A N/A", "#NA", "<NA>", "N/A", "NA", "NULL", "None", "n/a", "null")
_CASTABLE_NOT_FINITE_PATTERN = r"(?i)^[+-]?(nan|inf|infinity)$"
# Spreadsheet spellings of NaN that pandas reads as NaN: refused as not finite, not as wrong types.
_OTHER_NAN_PATTERN = r"(?i)^[+-]?1\.#(ind|qnan)$"
# What Arrow's text-to-float cast accepts, besides NaN and infinity.
_NUMBER_PATTERN = r"^[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?$"
#: Characters of an offending value quoted in an error message.
VALUE_SHOWN_CHARS = 40


@dataclass(frozen=True)
class TableCheck:
    """One chunk checked against the schema: model arrays of its valid rows, and every problem found.

    Positions are 0-based within the chunk. `errors` maps position, field, code, message and value to
    equally long arrays; a row with any error is not predicted. `warnings_json` holds each row's warnings
    as the JSON list a single prediction stores ("[]" for none), `warnings_text` a short "field: code; …".
    """

    columns: dict[str, np.ndarray]
    valid: np.ndarray
    errors: dict[str, np.ndarray]
    warnings_json: np.ndarray
    warnings_text: np.ndarray

    @property
    def n_valid(self) -> int:
        return int(self.valid.sum())

    @property
    def n_errors(self) -> int:
        return len(self.errors["position"])


def _json_text(value: str) -> str:
    """JSON string body (no quotes) of `value`."""
    return json.dumps(value)[1:-1]


def _warning_item(name: str, code: str, message: str) -> str:
    return json.dumps({"field": name, "code": code, "message": message})


class _Notes:
    """Per-row warnings and errors, gathered column by column; only flagged rows cost Python work."""

    def __init__(self, n: int) -> None:
        self.json = np.full(n, "", dtype=object)
        self.text = np.full(n, "", dtype=object)
        self.invalid = np.zeros(n, dtype=bool)
        self.errors: list[tuple[np.ndarray, str, str, np.ndarray, np.ndarray]] = []

    def warn(self, mask: np.ndarray, *, name: str, code: str, json_items: Any) -> None:
        """Add one warning to the rows of `mask`; json_items: its JSON object text, one or per masked row."""
        positions = np.flatnonzero(mask)
        if not len(positions):
            return
        current = self.json[positions]
        self.json[positions] = np.where(current == "", json_items, current + "," + json_items)
        short = f"{name}: {code}"
        current = self.text[positions]
        self.text[positions] = np.where(current == "", short, current + "; " + short)

    def error(
        self,
        mask: np.ndarray,
        *,
        name: str,
        code: str,
        values: Any,
        before: str = "",
        after: str = "",
        message: str | None = None,
    ) -> None:
        """Refuse the rows of `mask`; the message quotes each value between before and after, or is
        `message` for all, and then the errors file shows the value cut short too (it may be huge)."""
        positions = np.flatnonzero(mask)
        if not len(positions):
            return
        self.invalid[positions] = True
        shown = np.asarray(pc.take(values, pa.array(positions)).to_pylist(), dtype=object)
        cut = np.array([len(v) > VALUE_SHOWN_CHARS for v in shown], dtype=bool)
        quoted = shown.copy()
        quoted[cut] = [v[: VALUE_SHOWN_CHARS - 3] + "..." for v in shown[cut]]
        if message is not None:
            messages = np.full(len(positions), message, dtype=object)
            self.errors.append((positions, name, code, messages, quoted))
            return
        self.errors.append((positions, name, code, before + quoted + after, shown))

    def error_table(self) -> dict[str, np.ndarray]:
        if not self.errors:
            empty = np.empty(0, dtype=object)
            return {"position": np.empty(0, dtype="int64"), "field": empty, "code": empty, "message": empty,
                    "value": empty}  # fmt: skip
        position = np.concatenate([e[0] for e in self.errors])
        order = np.argsort(position, kind="stable")
        return {
            "position": position[order],
            "field": np.concatenate([np.full(len(e[0]), e[1], dtype=object) for e in self.errors])[order],
            "code": np.concatenate([np.full(len(e[0]), e[2], dtype=object) for e in self.errors])[order],
            "message": np.concatenate([e[3] for e in self.errors])[order],
            "value": np.concatenate([e[4] for e in self.errors])[order],
        }

    def warnings(self) -> tuple[np.ndarray, np.ndarray]:
        present = self.json != ""
        out = np.full(len(self.json), "[]", dtype=object)
        out[present] = "[" + self.json[present] + "]"
        return out, self.text


def _mask(array: Any) -> np.ndarray:
    """A boolean Arrow result as numpy, nulls as False."""
    return pc.fill_null(array, False).to_numpy(zero_copy_only=False)


def _numbers(present: Any, missing: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(float values with NaN where missing or not a number, mask of texts that are not numbers)."""
    try:
        numbers = pc.cast(present, pa.float64())
        return numbers.to_numpy(zero_copy_only=False), np.zeros(len(missing), dtype=bool)
    except pa.ArrowInvalid:
        pass
    # Some text is not a number: cast only the texts that look like one.
    looks = _mask(pc.match_substring_regex(present, _NUMBER_PATTERN)) | _mask(
        pc.match_substring_regex(present, _CASTABLE_NOT_FINITE_PATTERN)
    )
    other_nan = _mask(pc.match_substring_regex(present, _OTHER_NAN_PATTERN))
    numbers = pc.cast(pc.if_else(pa.array(looks), present, pa.scalar(None, pa.string())), pa.float64())
    return numbers.to_numpy(zero_copy_only=False), ~missing & ~looks & ~other_nan


def _numbers_as_written(values: Any) -> np.ndarray | None:
    """The cells as floats when every one is a number written without padding (NaN and infinity
    spelled out included), else None."""
    if values.null_count:
        return None
    try:
        return pc.cast(values, pa.float64()).to_numpy(zero_copy_only=False)
    except pa.ArrowInvalid:
        return None


def _canonical_numbers(values: Any) -> Any:
    """Numbers written as text in the canonical category form training used ("3.0", "03" → "3")."""
    looks = pa.array(_mask(pc.match_substring_regex(values, _NUMBER_PATTERN)))
    numbers = pc.cast(pc.if_else(looks, values, pa.scalar(None, pa.string())), pa.float64())
    as_float = numbers.to_numpy(zero_copy_only=False)
    whole = np.isfinite(as_float) & (np.abs(as_float) < 2**53) & (np.floor(as_float) == as_float)
    text = np.asarray(values.to_pylist(), dtype=object)
    text[whole] = as_float[whole].astype("int64").astype(str)
    fractional = np.isfinite(as_float) & ~whole
    text[fractional] = as_float[fractional].astype(str)
    return pa.array(text, type=pa.string())


def table_validate(
    *, table: pa.Table, feature_schema: list[dict[str, Any]], max_text_chars: int = DEFAULT_MAX_TEXT_CHARS
) -> TableCheck:
    """Check every feature cell of a chunk whose columns are all text, as written in the CSV file.

    The rules of rows_validate, per column: an empty cell (or an NA marker such as "NA", "null") is a
    missing value, imputed by the model with a warning; a numeric cell that is not a number is an error,
    and so are NaN or infinity written out, a number beyond float32's range and a category longer than
    `max_text_chars`; unknown categories and out-of-range numbers are warnings.
    Columns that are not features are ignored. Categories written as numbers are read as training read
    them when every training category is a number ("3.0" → "3").
    """
    n = table.num_rows
    notes = _Notes(n)
    columns: dict[str, np.ndarray] = {}
    for column in feature_schema:
        name = column["name"]
        raw = table.column(name).combine_chunks()
        whole = _numbers_as_written(raw) if column["kind"] == NUMERIC else None
        if whole is not None:
            # Every cell reads as a number as written: Arrow's cast refuses blanks, NA markers and
            # padding, so nothing is missing or needs trimming (a third of the time of the checks below).
            stripped, numbers = raw, whole
            missing = wrong = np.zeros(n, dtype=bool)
        else:
            stripped = pc.utf8_trim_whitespace(raw)
            missing = _mask(pc.is_in(stripped, value_set=pa.array(NA_MARKERS)))
            notes.warn(
                missing,
                name=name,
                code=MISSING_VALUE,
                json_items=_warning_item(
                    name,
                    MISSING_VALUE,
                    f"'{name}' is empty; the model filled it in as it did for missing training values.",
                ),
            )
        if column["kind"] == NUMERIC:
            if whole is None:
                present = pc.if_else(pa.array(missing), pa.scalar(None, pa.string()), stripped)
                numbers, wrong = _numbers(present, missing)
            too_large = ~missing & ~wrong & np.isfinite(numbers) & (np.abs(numbers) > FLOAT32_MAX)
            not_finite = ~missing & ~wrong & ~too_large & ~np.isfinite(numbers)
            notes.error(
                too_large, name=name, code=TOO_LARGE_NUMBER, values=stripped,
                before=f"'{name}' = ", after=too_large_suffix(),
            )  # fmt: skip
            notes.error(
                wrong, name=name, code=WRONG_TYPE, values=stripped,
                before=f"'{name}' must be a number; got '", after="'.",
            )  # fmt: skip
            notes.error(
                not_finite, name=name, code=NOT_FINITE, values=stripped,
                before=f"'{name}' must be a finite number; got '",
                after="'. Leave the cell empty for a missing value.",
            )  # fmt: skip
            ok = ~(missing | wrong | not_finite | too_large)
            values = np.where(ok, numbers, np.nan)
            low, high = column.get("min"), column.get("max")
            outside = np.zeros(n, dtype=bool)
            if low is not None:
                outside |= ok & (numbers < low)
            if high is not None:
                outside |= ok & (numbers > high)
            if outside.any():
                # Text that parses as a finite number holds no character JSON would escape.
                shown = np.asarray(
                    pc.take(stripped, pa.array(np.flatnonzero(outside))).to_pylist(), dtype=object
                )
                prefix = '{"field": ' + json.dumps(name) + f', "code": "{OUT_OF_RANGE}", "message": "'
                suffix = _json_text(
                    f" is outside the training range ({range_text(low, high)}); "
                    "the prediction is an extrapolation."
                )
                items = prefix + _json_text(f"'{name}' = ") + shown + suffix + '"}'
                notes.warn(outside, name=name, code=OUT_OF_RANGE, json_items=items)
            columns[name] = values
        else:
            categories = column.get("categories") or []
            text = raw
            if categories and all(_number_like(c) for c in categories):
                text = _canonical_numbers(raw)
            text = pc.if_else(pa.array(missing), pa.scalar("", pa.string()), text)
            lengths = pc.fill_null(pc.utf8_length(raw), 0).to_numpy(zero_copy_only=False)
            too_long = ~missing & (lengths > max_text_chars)
            if too_long.any():
                for length in np.unique(lengths[too_long]):
                    same = too_long & (lengths == length)
                    notes.error(
                        same, name=name, code=TOO_LONG_TEXT, values=raw,
                        message=too_long_message(name, int(length), max_text_chars),
                    )  # fmt: skip
            if categories:
                unknown = ~missing & ~_mask(pc.is_in(text, value_set=pa.array(categories, pa.string())))
                if unknown.any():
                    shown = pc.take(text, pa.array(np.flatnonzero(unknown))).to_pylist()
                    messages = {
                        value: _warning_item(
                            name,
                            UNKNOWN_CATEGORY,
                            f"'{name}' = '{value}' was not seen in training; the model treats it as none "
                            "of the known categories.",
                        )
                        for value in set(shown)
                    }
                    items = np.array([messages[value] for value in shown], dtype=object)
                    notes.warn(unknown, name=name, code=UNKNOWN_CATEGORY, json_items=items)
            columns[name] = text.to_numpy(zero_copy_only=False).astype(object, copy=False)
    valid = ~notes.invalid
    if not valid.all():
        columns = {name: values[valid] for name, values in columns.items()}
    warnings_json, warnings_text = notes.warnings()
    return TableCheck(
        columns=columns,
        valid=valid,
        errors=notes.error_table(),
        warnings_json=warnings_json,
        warnings_text=warnings_text,
    )


def _number_like(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
