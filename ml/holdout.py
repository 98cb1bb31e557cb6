"""A training run's holdout: split sizes, the seeded split, a retraining's explicit plan, a fingerprint.

scikit-learn is imported in the function that splits, as in ml.train.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ml.errors import TrainingInputError

MIN_TRAIN_ROWS = 5
MIN_TEST_ROWS = 2


def split_sizes(n_rows: int, test_size: float) -> tuple[int, int]:
    # The same rounding as train_test_split: the holdout is rounded up.
    n_test = math.ceil(test_size * n_rows)
    return n_rows - n_test, n_test


def minimum_rows(test_size: float) -> int:
    n = MIN_TRAIN_ROWS + MIN_TEST_ROWS
    while True:
        n_train, n_test = split_sizes(n, test_size)
        if n_train >= MIN_TRAIN_ROWS and n_test >= MIN_TEST_ROWS:
            return n
        n += 1


def holdout_fingerprint(index: pd.Index) -> str:
    return hashlib.sha256("\n".join(map(str, index.tolist())).encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class HoldoutPlan:
    """An explicit split for a retraining, instead of the seeded one.

    The frame's first `original_rows` rows are the parent dataset: their holdout is the parent's own seeded
    split (`original_seed`, `original_test_size`), so champion and challenger are judged on the rows the
    champion was. Rows from `recent_from_row` on are the newest outcomes (the policy's window): a seeded
    sample of `recent_holdout` of them is held out too, and the others weigh `recent_weight` in the fit, so
    recent labels outvote what the concept used to be. A sample rather than the newest rows: right after a
    drift the newest rows are the only ones that show it, and the challenger must learn from some of them.
    """

    original_rows: int
    original_seed: int
    original_test_size: float
    recent_from_row: int
    recent_holdout: int
    recent_seed: int
    recent_weight: float = 1.0

    @classmethod
    def from_dict(cls, value: dict[str, Any]) -> HoldoutPlan:
        return cls(**{name: value[name] for name in cls.__dataclass_fields__ if name in value})

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}

    def recent_holdout_rows(self, n_rows: int) -> np.ndarray:
        """Positions of the held-out recent rows in a frame of `n_rows` rows (sorted)."""
        window = np.arange(self.recent_from_row, n_rows)
        if not 0 < self.recent_holdout < len(window):
            raise TrainingInputError("The retraining's holdout plan does not fit the dataset's rows.")
        return np.sort(
            np.random.default_rng(self.recent_seed).choice(window, self.recent_holdout, replace=False)
        )


def seeded_test_index(
    y: pd.Series, counts: pd.Series | None, *, test_size: float, seed: int
) -> tuple[pd.Index, bool]:
    """The rows of the seeded holdout (train_test_split), and whether it was stratified by class."""
    from sklearn.model_selection import train_test_split

    n_train, n_test = split_sizes(len(y), test_size)
    stratified = bool(
        counts is not None and counts.min() >= 2 and n_test >= len(counts) and n_train >= len(counts)
    )
    # Class codes in the labels' sorted order give the stratified splitter the same classes and counts as
    # the labels themselves, so the same split, without it sorting every text label.
    strata = pd.factorize(y, sort=True)[0] if stratified else None
    _, test = train_test_split(y.index, test_size=n_test, random_state=seed, stratify=strata)
    return pd.Index(test), stratified


def plan_split(y: pd.Series, frame_rows: int, plan: HoldoutPlan) -> tuple[pd.Index, np.ndarray]:
    """The holdout rows and the training rows' weights under an explicit plan."""
    if not 0 < plan.original_rows <= plan.recent_from_row < frame_rows:
        raise TrainingInputError("The retraining's holdout plan does not fit the dataset's rows.")
    original = y.loc[y.index < plan.original_rows]
    counts = original.value_counts() if not pd.api.types.is_float_dtype(original) else None
    original_test, _ = seeded_test_index(
        original, counts, test_size=plan.original_test_size, seed=plan.original_seed
    )
    recent_test = pd.Index(plan.recent_holdout_rows(frame_rows)).intersection(y.index)
    test = original_test.append(recent_test)
    train = y.index.difference(test)
    weights = np.where(train >= plan.recent_from_row, float(plan.recent_weight), 1.0)
    return test, weights
