"""feedback_store on PostgreSQL: changed outcomes written through a temporary table and one UPDATE (many
rows, as a file chunk has) store exactly what an UPDATE per row (one outcome from a page) stores."""

from __future__ import annotations

import datetime as dt
from collections import Counter

import pytest
from django.db import transaction
from django.utils import timezone

from feedback import services as feedback_services
from feedback import store as feedback_store_module
from feedback.models import DelayHourly, Feedback, FeedbackChange, QualityHourly, Source
from feedback.tests.import_helpers import predictions_of

pytestmark = [pytest.mark.django_db, pytest.mark.postgres]


class Undo(Exception):
    def __init__(self, result):
        super().__init__("undo")
        self.result = result


def tables() -> dict:
    feedback = {
        row.pop("prediction_id"): row
        for row in Feedback.objects.values(
            "prediction_id",
            "model_version_id",
            "prediction_created_at",
            "predicted_label",
            "predicted_value",
            "correct",
            "true_label",
            "true_value",
            "comment",
            "source",
            "labelled_by_id",
            "created_at",
            "updated_at",
        )
    }
    changes = sorted(
        FeedbackChange.objects.values_list(
            "feedback__prediction_id", "old", "new", "changed_by_id", "source", "changed_at"
        ),
        key=repr,
    )
    quality = sorted(
        QualityHourly.objects.values_list(
            "model_version_id", "hour", "predicted", "actual", "n", "sum_abs_error", "sum_sq_error"
        )
    )
    delay = sorted(DelayHourly.objects.values_list("model_version_id", "hour", "bin", "n"))
    return {"feedback": feedback, "changes": changes, "quality": quality, "delay": delay}


def outcome_runs(store, *, rounds, user) -> dict:
    """Check and store each round of items with `store`, then undo it all; returns the tables and counts."""
    counts = []
    try:
        with transaction.atomic():
            for items in rounds:
                check = feedback_services.feedback_check(items, user=user, text=True)
                assert not check.problems, check.problems
                counts.append(store(check.valid))
            raise Undo({**tables(), "counts": counts})
    except Undo as undo:
        return undo.result


def test_the_bulk_update_writes_what_an_update_per_row_writes(
    cancer_v1, diabetes_v1, alice, staff, monkeypatch
):
    frozen = timezone.now() + dt.timedelta(hours=3)
    monkeypatch.setattr(timezone, "now", lambda: frozen)
    c = predictions_of(alice, 5)
    r = predictions_of(alice, 3, name="diabetes")
    first = [
        {"prediction": str(c[0].pk), "true_label": "benign", "comment": "first"},
        {"prediction": str(c[1].pk), "true_label": "malignant"},
        {"prediction": str(c[2].pk), "correct": "yes"},
        {"prediction": str(c[3].pk), "correct": "no", "comment": "tab\there, line\nbreak, back\\slash"},
        {"prediction": str(r[0].pk), "true_value": "150.25"},
        {"prediction": str(r[1].pk), "true_value": "-3"},
    ]
    second = [
        {"prediction": str(c[0].pk), "true_label": "benign"},  # unchanged
        {"prediction": str(c[1].pk), "true_label": "malignant", "comment": "now with a comment"},  # comment
        {"prediction": str(c[2].pk), "correct": "no"},  # flipped
        {"prediction": str(c[3].pk), "correct": "yes"},  # flipped, keeps its comment
        {"prediction": str(c[4].pk), "true_label": "benign"},  # new
        {"prediction": str(r[0].pk), "true_value": "99"},  # changed value
        {"prediction": str(r[1].pk), "true_value": "-3", "correct": "true"},  # now also says right
        {"prediction": str(r[2].pk), "true_value": "1e3"},  # new
    ]

    def stored(checked):
        results = feedback_services.feedback_store(checked, user=staff, source=Source.FILE, answer=False)
        return Counter(s.status for s in results)

    monkeypatch.setattr(feedback_store_module, "_UPDATE_IN_BULK", 10**9)
    expected = outcome_runs(stored, rounds=[first, second], user=staff)
    monkeypatch.setattr(feedback_store_module, "_UPDATE_IN_BULK", 1)
    found = outcome_runs(stored, rounds=[first, second], user=staff)

    for name in ("feedback", "changes", "quality", "delay"):
        assert found[name] == expected[name], name
    assert [dict(c) for c in found["counts"]] == [
        {"created": 6},
        {"unchanged": 1, "updated": 5, "created": 2},
    ]
    assert found["counts"] == expected["counts"]
    assert len(expected["changes"]) == 4
