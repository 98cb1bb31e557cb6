"""Outcomes written at the same moment, on PostgreSQL: one row per prediction and rollups that add up."""

from __future__ import annotations

import pytest
from django.test.utils import CaptureQueriesContext

from feedback import reconcile, selectors, services
from feedback.models import Feedback, FeedbackChange, Source
from models_registry.tests.test_registry_postgres import run_together
from predictions import services as prediction_services
from predictions.models import Prediction
from predictions.tests.helpers import make_predictions, trained_model

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

WORKERS = 6


def test_concurrent_outcomes_of_one_prediction_leave_one_row_and_a_consistent_rollup(iris_v1, alice):
    (prediction,) = make_predictions(user=alice, name="iris")
    classes = [str(c) for c in iris_v1.classes]

    outcomes = run_together(
        lambda index: services.feedback_give(
            prediction_id=prediction.pk,
            user=alice,
            source=Source.API,
            data={"true_label": classes[index % len(classes)]},
        ),
        WORKERS,
    )

    assert outcomes == [None] * WORKERS
    assert Feedback.objects.count() == 1
    # Every write after the first either repeated the outcome there or replaced it, in some order.
    assert FeedbackChange.objects.count() <= WORKERS - 1
    assert reconcile.quality_reconcile().differences == []
    assert selectors.version_quality(version=iris_v1)["live"]["n"] == 1


def test_concurrent_bulk_writes_of_different_predictions_add_up(cancer_v1, alice):
    predictions = make_predictions(user=alice, count=WORKERS * 5, name="cancer")

    outcomes = run_together(
        lambda index: services.feedback_give_many(
            items=[{"prediction": p.pk, "correct": True} for p in predictions[index * 5 : index * 5 + 5]],
            user=alice,
            source=Source.API,
        ),
        WORKERS,
    )

    assert outcomes == [None] * WORKERS
    live = selectors.version_quality(version=cancer_v1)["live"]
    assert (live["n"], live["correct"]) == (WORKERS * 5, WORKERS * 5)
    assert reconcile.quality_reconcile().differences == []


def test_concurrent_predictions_with_the_same_key_store_one(cancer_v1, alice):
    row = trained_model("cancer").sample_rows[0]

    outcomes = run_together(
        lambda index: prediction_services.prediction_make(
            registered_model_name="cancer", rows=[row], user=alice, channel="api", keys=["order-1"]
        ),
        WORKERS,
    )

    refused = [o for o in outcomes if o is not None]
    assert len(refused) == WORKERS - 1
    assert all(getattr(o, "errors", [{}])[0].get("code") == "duplicate_key" for o in refused)
    assert reconcile.quality_reconcile().differences == []


def test_the_label_queue_walks_the_confidence_index(cancer_v1, alice):
    from django.db import connection

    make_predictions(user=alice, count=5, name="cancer")
    # With a handful of rows every index costs the same and the planner picks either; a queue of 20,000
    # makes the index walk the only sensible plan, as it is in production.
    columns = [
        f.column
        for f in Prediction._meta.concrete_fields
        if f.column not in ("id", "row_index", "confidence")
    ]
    listed = ", ".join(columns)
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {Prediction._meta.db_table} ({listed}, row_index, confidence) "  # noqa: S608
            f"SELECT {listed}, row_index + 100 * copy, random() FROM {Prediction._meta.db_table}, "
            "generate_series(1, 4000) AS copy WHERE model_version_id = %s",
            [cancer_v1.pk],
        )
        cursor.execute(f"ANALYZE {Prediction._meta.db_table}")
    with CaptureQueriesContext(connection) as captured:
        list(selectors.label_queue(version=cancer_v1)[:25])
    sql = captured.captured_queries[-1]["sql"]
    with connection.cursor() as cursor:
        cursor.execute("SET enable_seqscan = off")
        cursor.execute("EXPLAIN " + sql)
        plan = "\n".join(row[0] for row in cursor.fetchall())
    assert "prediction_version_confidence" in plan, plan
