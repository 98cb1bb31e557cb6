"""Champion against challenger on a retraining's holdout: the original rows and the newest outcomes."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from datasets import selectors as dataset_selectors
from feedback import selectors as feedback_selectors
from ml import compare
from ml.pipeline import columns_from_frame, frame_prepare
from ml.train import HoldoutPlan, seeded_holdout_rows
from models_registry.models import ModelVersion, Task
from predictions import selectors as prediction_selectors
from training.models import Retraining


def _labels(values: Any) -> np.ndarray:
    return np.array([feedback_selectors.label_text(v) for v in values], dtype=object)


def _paired(
    *, champion: ModelVersion, challenger: ModelVersion, frame: pd.DataFrame
) -> tuple[np.ndarray, np.ndarray]:
    """Per row of `frame` with a target: whether each version was right (classification), or its error."""
    target = champion.target_column
    present = frame[frame[target].notna()]
    predictions = []
    for version in (champion, challenger):
        prepared = frame_prepare(present, version.feature_schema)
        labels, _ = prediction_selectors.version_predictor(version=version).predict_columns(
            columns_from_frame(prepared, version.feature_schema)
        )
        predictions.append(labels)
    if champion.task == Task.REGRESSION:
        truth = present[target].to_numpy(dtype=float)
        errors = [np.asarray(p, dtype=float) - truth for p in predictions]
        return errors[0], errors[1]
    truth = _labels(present[target].tolist())
    return _labels(predictions[0]) == truth, _labels(predictions[1]) == truth


def _compare(task: str, champion: np.ndarray, challenger: np.ndarray) -> compare.PairedComparison:
    if task == Task.REGRESSION:
        return compare.regression_compare(champion_errors=champion, challenger_errors=challenger)
    return compare.classification_compare(champion_right=champion, challenger_right=challenger)


def holdout_compare(
    *, champion: ModelVersion, challenger: ModelVersion, frame: pd.DataFrame
) -> compare.PairedComparison:
    """Both versions' predictions on the same rows (a frame with the target), paired."""
    return _compare(champion.task, *_paired(champion=champion, challenger=challenger, frame=frame))


def holdout_parts(*, retraining: Retraining) -> dict[str, pd.DataFrame]:
    frame = dataset_selectors.dataset_version_frame(version=retraining.dataset_version)
    plan = HoldoutPlan.from_dict(retraining.figures["plan"])
    champion = retraining.champion
    original = frame.iloc[: plan.original_rows]
    original_rows = seeded_holdout_rows(
        original,
        target_column=champion.target_column,
        task=champion.task,
        seed=plan.original_seed,
        test_size=plan.original_test_size,
    )
    return {
        "original": original.iloc[original_rows],
        "recent": frame.iloc[plan.recent_holdout_rows(len(frame))],
    }


def retraining_holdout_compare(*, retraining: Retraining) -> dict[str, compare.PairedComparison]:
    """Both versions on the original holdout, on the recent one, and on the two together."""
    champion, challenger = retraining.champion, retraining.challenger
    # Each part is predicted once; the whole holdout is the parts' rows together.
    paired = {
        name: _paired(champion=champion, challenger=challenger, frame=part)
        for name, part in holdout_parts(retraining=retraining).items()
    }
    results = {name: _compare(champion.task, *rows) for name, rows in paired.items()}
    results["combined"] = _compare(
        champion.task,
        np.concatenate([rows[0] for rows in paired.values()]),
        np.concatenate([rows[1] for rows in paired.values()]),
    )
    return results
