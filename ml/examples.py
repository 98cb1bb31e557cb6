"""Example input rows of a model version, which the predict form offers to fill itself with.

A trained version keeps a few real rows of its holdout. A version without them (uploaded, or trained
before examples were kept) gets one typical row from its reference profile instead: per numeric feature
its median (a value seen in training for a discrete feature), per categorical feature the most frequent
category.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from ml.features import MISSING_CATEGORY, NUMERIC

EXAMPLE_ROWS = 5

ExampleRow = dict[str, float | str | None]


def example_rows_pick(
    X: pd.DataFrame, feature_schema: list[dict[str, Any]], *, count: int = EXAMPLE_ROWS, seed: int = 0
) -> list[ExampleRow]:
    """Up to `count` rows of X chosen with `seed`, JSON-safe: None where a value is missing."""
    if len(X) == 0:
        return []
    picked = np.sort(np.random.default_rng(seed).choice(len(X), min(count, len(X)), replace=False))
    rows: list[ExampleRow] = []
    for position in picked.tolist():
        row: ExampleRow = {}
        for column in feature_schema:
            value = X.iloc[position][column["name"]]
            row[column["name"]] = _json_value(value, numeric=column["kind"] == NUMERIC)
        rows.append(row)
    return rows


def _json_value(value: Any, *, numeric: bool) -> float | str | None:
    if numeric:
        number = float(value)
        return None if math.isnan(number) else number
    text = "" if value is None else str(value)
    return None if text == MISSING_CATEGORY else text


def typical_row(reference_profile: dict[str, Any] | None) -> ExampleRow | None:
    """One row of typical values from a version's reference profile (ml.drift), or None without one."""
    if not reference_profile or not reference_profile.get("features"):
        return None
    row: ExampleRow = {}
    for spec in reference_profile["features"]:
        if spec["kind"] == NUMERIC:
            row[spec["name"]] = _median_value(spec)
        else:
            row[spec["name"]] = spec["categories"][0] if spec["categories"] else None
    return row


def _median_value(spec: dict[str, Any]) -> float | None:
    """The median from the binned counts: interpolated inside its bin for a continuous feature, the bin's
    mean (one value seen in training) for a discrete one or an end bin."""
    counts, sums, edges = spec["counts"], spec["sums"], spec["edges"]
    total = sum(counts)
    if total == 0:
        return None
    below = 0
    for index, (count, bin_sum) in enumerate(zip(counts, sums, strict=True)):
        if count and (below + count) * 2 >= total:
            if spec.get("discrete") or not 0 < index < len(edges):
                return float(bin_sum) / count
            low, high = edges[index - 1], edges[index]
            return float(low + (high - low) * (total / 2 - below) / count)
        below += count
    return None  # not reached: the counts add up to the total


def example_text(value: float | str | None) -> str:
    """A value as the predict form shows it: numbers in their shortest exact form, missing as empty."""
    if value is None:
        return ""
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() and abs(value) < 1e15 else repr(value)
    return str(value)
