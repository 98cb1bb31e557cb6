"""Champion against challenger on a retraining's holdout (the original rows and the newest outcomes), and the
judgement on it: stage the challenger and shadow it, or hold it back."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from django.db import transaction
from django.utils import timezone

from datasets import selectors as dataset_selectors
from feedback import selectors as feedback_selectors
from jobs import engine
from ml import compare
from ml.features import columns_from_frame, frame_prepare
from ml.holdout import HoldoutPlan
from ml.train import seeded_holdout_rows
from models_registry import transition_services
from models_registry.models import ModelVersion, Stage, Task
from predictions import selectors as prediction_selectors
from training import decision_services, event_services, policy_services
from training.models import Retraining, RetrainingEvent

Kind = RetrainingEvent.Kind


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


def _earlier_challengers_archive(retraining: Retraining) -> None:
    """Archive the loop's earlier challengers still in staging that were held back: the new one replaces
    them (a version staged by hand is left where it is)."""
    held_back = Retraining.objects.filter(
        registered_model=retraining.registered_model,
        decision=Retraining.Decision.HELD_BACK,
        challenger__stage=Stage.STAGING,
    ).exclude(pk=retraining.pk)
    for earlier in held_back.select_related("challenger__registered_model"):
        transition_services.model_version_transition(
            model_version=earlier.challenger,
            to_stage=Stage.ARCHIVED,
            user=None,
            reason=(
                f"Held back by retraining {earlier.pk}; replaced by the challenger of retraining "
                f"{retraining.pk}."
            ),
        )


def retraining_holdout_judge(*, attempt: engine.Attempt[Retraining]) -> None:
    """Compare on the original and the recent holdout; stage the challenger and shadow it, or hold it back."""
    retraining = attempt.job
    policy = policy_services.retraining_policy_get(registered_model=retraining.registered_model)
    champion, challenger = retraining.champion, retraining.challenger
    results = retraining_holdout_compare(retraining=retraining)
    gate = transition_services.quality_gate_check(model_version=challenger)
    problems = decision_services.holdout_problems(
        results=results, margin=policy.margin, alpha=policy.alpha, gate=gate
    )
    figures = {
        **retraining.figures,
        "holdout": {name: result.as_dict() for name, result in results.items()},
        "quality_gate": gate,
        "margin": policy.margin,
        "alpha": policy.alpha,
    }
    decision = Retraining.Decision.HELD_BACK if problems else Retraining.Decision.SHADOWING
    with transaction.atomic():
        challenger = ModelVersion.objects.select_for_update().get(pk=challenger.pk)
        if challenger.stage == Stage.NONE:
            _earlier_challengers_archive(retraining)
            transition_services.model_version_transition(
                model_version=challenger,
                to_stage=Stage.STAGING,
                user=None,
                reason=f"Challenger of retraining {retraining.pk}.",
            )
        if decision == Retraining.Decision.SHADOWING:
            decision_services.shadow_start(registered_model=retraining.registered_model)
        attempt.succeed(
            step=Retraining.Step.DONE,
            decision=decision,
            figures=event_services.plain(figures),
            decided_at=timezone.now() if problems else None,
        )
        retraining.figures = figures
        summary = decision_services.describe(results["combined"])
        if problems:
            event_services.retraining_event_record(
                registered_model=retraining.registered_model,
                retraining=retraining,
                kind=Kind.HELD_BACK,
                message=f"{challenger} held back in staging: "
                + "; ".join(problems)
                + f". Holdout: {summary}.",
                figures=figures,
            )
        else:
            event_services.retraining_event_record(
                registered_model=retraining.registered_model,
                retraining=retraining,
                kind=Kind.COMPARED,
                message=(
                    f"{challenger} beats {champion} on the holdout ({summary}); in staging and in shadow "
                    f"until {policy.shadow_min_labels} of its shadow predictions are labelled."
                ),
                figures=figures,
            )
