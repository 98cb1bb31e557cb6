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


def holdout_compare(
    *, champion: ModelVersion, challenger: ModelVersion, frame: pd.DataFrame
) -> compare.PairedComparison:
    """Both versions' predictions on the same rows (a frame with the target), paired."""
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
        return compare.regression_compare(
            champion_errors=np.asarray(predictions[0], dtype=float) - truth,
            challenger_errors=np.asarray(predictions[1], dtype=float) - truth,
        )
    truth = _labels(present[target].tolist())
    return compare.classification_compare(
        champion_right=_labels(predictions[0]) == truth, challenger_right=_labels(predictions[1]) == truth
    )


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
    parts = holdout_parts(retraining=retraining)
    results = {
        name: holdout_compare(champion=champion, challenger=challenger, frame=part)
        for name, part in parts.items()
    }
    results["combined"] = holdout_compare(
        champion=champion, challenger=challenger, frame=pd.concat(list(parts.values()))
    )
    return results
