"""Live-quality figures from summed counts: accuracy with its Wilson interval, F1, per-class precision and
recall, MAE and RMSE, and the label-delay median. Plain functions on numbers, no database."""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

#: z for a two-sided 95% interval.
Z_95 = 1.959963984540054

#: Label-delay bin edges in seconds: bin i holds delays in [EDGES[i], EDGES[i+1]); the last is open.
DELAY_EDGES: tuple[int, ...] = (
    0,
    1,
    10,
    60,
    5 * 60,
    15 * 60,
    3600,
    3 * 3600,
    6 * 3600,
    12 * 3600,
    86400,
    2 * 86400,
    4 * 86400,
    7 * 86400,
    14 * 86400,
    30 * 86400,
    90 * 86400,
)


def delay_bin(seconds: float) -> int:
    """The bin of a delay; a negative delay (clocks apart) counts as none."""
    return max(0, bisect.bisect_right(DELAY_EDGES, max(0.0, seconds)) - 1)


def wilson_interval(successes: int, n: int, z: float = Z_95) -> tuple[float, float] | None:
    """The Wilson score interval of a proportion; None without trials.

    Unlike the normal approximation it stays inside [0, 1] and is honest for small n: 3 right of 3 gives
    0.44 to 1, not a certain 100%.
    """
    if n <= 0:
        return None
    p = successes / n
    z2 = z * z
    denominator = 1 + z2 / n
    centre = (p + z2 / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denominator
    # At 0 or n successes one bound is exactly 0 or 1; rounding would leave it a hair off.
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == n else min(1.0, centre + half)
    return low, high


def classification_figures(cells: Mapping[tuple[str, str], int], classes: Sequence[str]) -> dict[str, Any]:
    """Figures from {(predicted, actual): count}; actual "" means "wrong, true class not given".

    Accuracy counts every labelled row. A row with an unknown true class is a false positive of its
    predicted class but counts toward no class's recall. Macro F1 averages over the classes that were
    predicted or observed, as scikit-learn's f1_score(average="macro") does over the labels of y_true
    and y_pred together.
    """
    n = sum(cells.values())
    right = sum(count for (predicted, actual), count in cells.items() if predicted == actual)
    known = [c for c in classes]
    seen = {p for (p, _), count in cells.items() if count} | {
        a for (_, a), count in cells.items() if count and a
    }
    known += sorted(seen - set(known))
    per_class = []
    f1_values = []
    for label in known:
        true_positive = cells.get((label, label), 0)
        predicted_as = sum(count for (p, _), count in cells.items() if p == label)
        actually = sum(count for (_, a), count in cells.items() if a == label)
        precision = true_positive / predicted_as if predicted_as else None
        recall = true_positive / actually if actually else None
        if predicted_as or actually:
            p, r = precision or 0.0, recall or 0.0
            f1_values.append(2 * p * r / (p + r) if p + r else 0.0)
        per_class.append(
            {
                "label": label,
                "precision": precision,
                "recall": recall,
                "support": actually,
                "predicted": predicted_as,
            }
        )
    unknown = sum(count for (_, a), count in cells.items() if a == "")
    matrix_labels = known + ([""] if unknown else [])
    interval = wilson_interval(right, n)
    return {
        "n": n,
        "correct": right,
        "accuracy": right / n if n else None,
        "accuracy_interval": list(interval) if interval else None,
        "f1_macro": sum(f1_values) / len(f1_values) if f1_values else None,
        "per_class": per_class,
        "unknown_true_class": unknown,
        # Rows: predicted class; columns: true class ("" last when some were wrong without a label).
        "confusion": {
            "labels": matrix_labels,
            "matrix": [[cells.get((p, a), 0) for a in matrix_labels] for p in known],
        },
    }


def regression_figures(n: int, sum_abs_error: float, sum_sq_error: float) -> dict[str, Any]:
    return {
        "n": n,
        "mae": sum_abs_error / n if n else None,
        "rmse": math.sqrt(max(0.0, sum_sq_error) / n) if n else None,
    }


def delay_median(counts: Mapping[int, int]) -> float | None:
    """The median label delay in seconds from binned counts, interpolated inside its bin.

    Exact to the bin; inside it the delays are assumed spread evenly (the open last bin gives its start).
    """
    total = sum(counts.values())
    if not total:
        return None
    half = total / 2
    seen = 0
    for index in sorted(counts):
        count = counts[index]
        if count and seen + count >= half:
            low = DELAY_EDGES[index]
            if index + 1 >= len(DELAY_EDGES):
                return float(low)
            high = DELAY_EDGES[index + 1]
            return low + (high - low) * (half - seen) / count
        seen += count
    return float(DELAY_EDGES[max(counts)])


def exact_median(values: Iterable[float]) -> float | None:
    ordered = sorted(values)
    if not ordered:
        return None
    middle = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[middle]
    return (ordered[middle - 1] + ordered[middle]) / 2
