"""Writes for feedback: true outcomes of predictions, their history and the live-quality rollups.

One path for every entry point: the pages, the single and bulk API and the file import all check items
with `feedback_check` and store them with `feedback_store` (`feedback_give` and `feedback_give_many` do
both), which writes through `feedback.store`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction

from feedback import store
from feedback.checks import OUTCOME_FIELDS, Checked, CheckResult, feedback_check
from feedback.errors import FeedbackInvalid, PredictionNotFound
from feedback.models import Source
from feedback.store import STORED_STATUSES, Stored
from mlops_site.errors import problem
from monitoring import prometheus

__all__ = [
    "STORED_STATUSES",
    "CheckResult",
    "Checked",
    "FeedbackInvalid",
    "PredictionNotFound",
    "Stored",
    "feedback_check",
    "feedback_give",
    "feedback_give_many",
    "feedback_store",
]


def feedback_store(
    checked: Sequence[Checked], *, user: Any, source: str, answer: bool = True
) -> list[Stored]:
    """Store checked outcomes and their rollups in one transaction; idempotent per prediction.

    The same outcome again changes nothing ("unchanged"; a new comment is kept, "updated" with
    outcome_changed False). A different one replaces the outcome, records old → new in FeedbackChange,
    and moves the prediction's count from the old cell of the rollup to the new one. `answer=False`
    (file imports) skips building the Feedback instances of the answer.
    """
    if source not in Source.values:
        raise ValueError(f"unknown source {source!r}")
    if not checked:
        return []
    for attempt in range(2):
        try:
            with transaction.atomic():
                stored = store.outcomes_write(checked, user=user, source=source, answer=answer)
                prometheus.feedback_count(checked, stored)
                return stored
        except IntegrityError:
            # A concurrent writer created one of the outcomes first (there was no row to lock yet).
            # The second pass finds it, locks it and updates it instead.
            if attempt:
                raise
    raise AssertionError("unreachable")


def feedback_give(*, prediction_id: int, user: Any, source: str, data: Mapping[str, Any]) -> Stored:
    """Give one prediction its outcome; raises PredictionNotFound (404) or FeedbackInvalid (400)."""
    if not isinstance(data, Mapping):
        raise FeedbackInvalid([problem("The body must be an object.", code="invalid")])
    extra = sorted(str(k) for k in data if k not in OUTCOME_FIELDS)
    if extra:
        raise FeedbackInvalid(
            [
                problem(
                    f"Unknown field(s) {', '.join(map(repr, extra))}; use {', '.join(OUTCOME_FIELDS)}.",
                    field=extra[0][:100],
                )
            ]
        )
    if not 1 <= prediction_id <= 2**63 - 1:
        raise PredictionNotFound("No such prediction.")
    result = feedback_check([{**data, "prediction": prediction_id}], user=user)
    if any(p["code"] == "not_found" for p in result.problems):
        raise PredictionNotFound("No such prediction.")
    if result.problems:
        raise FeedbackInvalid([{**p, "row": None} for p in result.problems])
    (stored,) = feedback_store(result.valid, user=user, source=source)
    return stored


def bulk_max() -> int:
    return settings.FEEDBACK_BULK_MAX


def feedback_give_many(*, items: Any, user: Any, source: str) -> list[Stored]:
    """Give many predictions their outcomes, all or nothing: any problem refuses the whole list (400)."""
    if not isinstance(items, list) or not items:
        raise FeedbackInvalid([problem("Give 'items', a list of at least one object.", field="items")])
    if len(items) > bulk_max():
        raise FeedbackInvalid(
            [
                problem(
                    f"{len(items)} items; at most {bulk_max()} per request.", field="items", code="too_many"
                )
            ]
        )
    result = feedback_check(items, user=user)
    if result.problems:
        raise FeedbackInvalid(result.problems)
    return feedback_store(result.valid, user=user, source=source)
