"""A retraining's dataset: the champion's training data plus the labelled predictions, with lineage."""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import numpy as np
import pandas as pd
from django.conf import settings
from django.utils import timezone

from datasets import selectors as dataset_selectors
from datasets import services as dataset_services
from datasets.models import DatasetVersion
from feedback import selectors as feedback_selectors
from ml.errors import TrainingInputError
from ml.holdout import HoldoutPlan
from models_registry.models import ModelVersion
from training import event_services, policy_services
from training.models import Retraining, Window


@dataclass(frozen=True)
class Derived:
    version: DatasetVersion
    plan: HoldoutPlan
    lineage: dict[str, Any]
    held_out: int


def window_start(rows: list[feedback_selectors.LabelledRow], *, window: str, last_n: int) -> int:
    """Index of the first row inside the policy's window (rows oldest first)."""
    if window == Window.LAST:
        return max(0, len(rows) - last_n)
    since = timezone.now() - (timedelta(days=1) if window == Window.DAY else timedelta(days=7))
    for index, row in enumerate(rows):
        if row.prediction_created_at >= since:
            return index
    return len(rows)


@dataclass(frozen=True)
class Original:
    """The rows a chain of retrainings starts from, and the seeded holdout of them every champion kept out."""

    rows: int | None  # None: every row of the champion's dataset
    seed: int
    test_size: float


def champion_original(*, champion: ModelVersion) -> Original:
    """The champion's original rows: all of its dataset, or, for a champion the loop trained, the rows its
    own retraining started from (its dataset's first rows; the outcomes after them were that retraining's
    feedback, which the newest `feedback_rows` outcomes bring back if they are still new enough).

    Taking the outcomes again as feedback rather than as part of the champion's data keeps `feedback_rows`
    true after a promotion, and keeps the original holdout to rows no champion in the chain trained on: a
    fresh seeded split of the promoted champion's whole dataset would put rows it learned from in it.
    """
    run = champion.training_run
    if run.holdout:
        plan = HoldoutPlan.from_dict(run.holdout)
        return Original(plan.original_rows, plan.original_seed, plan.original_test_size)
    seed = champion.seed if champion.seed is not None else run.seed
    return Original(None, int(seed), float(run.test_size))


def retraining_dataset_derive(*, retraining: Retraining) -> Derived:
    """The champion's original rows, then the labelled predictions (deduplicated), as a new dataset version.

    Idempotent: the same rows make the same file, which dataset_version_create returns as it is.
    """
    champion = retraining.champion
    parent = champion.dataset_version
    policy = policy_services.retraining_policy_get(registered_model=retraining.registered_model)
    original = champion_original(champion=champion)
    parent_frame = dataset_selectors.dataset_version_frame(version=parent).iloc[: original.rows]
    rows = feedback_selectors.labelled_rows(
        registered_model=retraining.registered_model,
        limit=min(policy.feedback_rows, settings.RETRAINING_MAX_FEEDBACK_ROWS),
    )
    if not rows:
        raise TrainingInputError("There are no labelled predictions with their inputs to learn from.")
    features = [column["name"] for column in champion.feature_schema]
    target = champion.target_column
    outcomes = pd.DataFrame([row.inputs for row in rows], columns=features)
    outcomes[target] = [row.target for row in rows]
    window_from = window_start(rows, window=policy.window, last_n=policy.last_n)
    outcomes["_recent"] = np.arange(len(rows)) >= window_from
    outcomes["_id"] = [row.feedback_id for row in rows]
    # The same inputs labelled more than once teach one thing: the newest outcome.
    outcomes = outcomes.drop_duplicates(subset=features, keep="last").reset_index(drop=True)
    if not outcomes["_recent"].any():
        raise TrainingInputError("None of the labelled predictions is inside the policy's window.")
    n_parent = len(parent_frame)
    first_recent = int(np.flatnonzero(outcomes["_recent"].to_numpy())[0])
    n_recent = len(outcomes) - first_recent
    held_out = max(2, math.ceil(policy.recent_holdout_share * n_recent))
    if held_out >= n_recent:
        raise TrainingInputError(
            f"Only {n_recent} labelled predictions in the policy's window: too few to both learn from and "
            "judge on."
        )
    plan = HoldoutPlan(
        original_rows=n_parent,
        original_seed=original.seed,
        original_test_size=original.test_size,
        recent_from_row=n_parent + first_recent,
        recent_holdout=held_out,
        recent_seed=retraining.pk,
        # The window's rows left to learn from stand for the whole window: without the held-out share
        # back in their weight, judging on the newest outcomes would tilt the fit towards the older ones.
        recent_weight=float(policy.recent_weight) * n_recent / (n_recent - held_out),
    )
    derived = pd.concat([parent_frame, outcomes.reindex(columns=parent_frame.columns)], ignore_index=True)
    kept = outcomes["_id"].tolist()
    kept_ids = set(kept)
    used = [row for row in rows if row.feedback_id in kept_ids]
    lineage = event_services.plain(
        {
            "retraining": retraining.pk,
            "parent": {"dataset": parent.dataset.name, "version": parent.version, "sha256": parent.sha256},
            "parent_rows": n_parent,
            "feedback": {
                "rows": len(outcomes),
                "duplicates_dropped": len(rows) - len(outcomes),
                "first_id": min(kept),
                "last_id": max(kept),
                "predicted_from": min(r.prediction_created_at for r in used).isoformat(),
                "predicted_to": max(r.prediction_created_at for r in used).isoformat(),
                "labelled_to": max(r.labelled_at for r in used).isoformat(),
                "window": policy.window,
                "in_window": n_recent,
            },
            "holdout_plan": plan.as_dict(),
        }
    )
    version, _ = dataset_services.dataset_version_create(
        name=parent.dataset.name,
        file=io.BytesIO(derived.to_csv(index=False).encode("utf-8")),
        target_column=parent.target_column,
        created_by=None,
        parent=parent,
        original_filename=f"retraining-{retraining.pk}.csv",
        lineage=lineage,
    )
    return Derived(version=version, plan=plan, lineage=lineage, held_out=held_out)
