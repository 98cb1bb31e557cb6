"""PREDICTION_LOG_DURABLE=False: on PostgreSQL a prediction's transaction commits without waiting for the
WAL flush, and only that transaction."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from predictions import services
from predictions.models import Channel, Prediction
from predictions.tests.helpers import trained_model

ROW = trained_model("cancer").sample_rows[0]
RELAX = "SET LOCAL synchronous_commit TO OFF"


def predict(user):
    with CaptureQueriesContext(connection) as queries:
        services.prediction_make(registered_model_name="cancer", rows=[ROW], user=user, channel=Channel.API)
    return [q["sql"] for q in queries.captured_queries]


def synchronous_commit() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SHOW synchronous_commit")
        return cursor.fetchone()[0]


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)  # the storing transaction is then a real one, not a savepoint
def test_a_prediction_commits_without_waiting_for_the_disk_when_asked(alice, cancer_v1, settings):
    settings.PREDICTION_LOG_DURABLE = False
    # The test server runs with synchronous_commit=off for speed: turn it on for this session to see
    # that the prediction changes it for its own transaction only.
    before = synchronous_commit()
    with connection.cursor() as cursor:
        cursor.execute("SET synchronous_commit TO on")
    try:
        sql = predict(alice)
        after = synchronous_commit()
    finally:
        with connection.cursor() as cursor:
            cursor.execute(f"SET synchronous_commit TO {before}")

    # First in the storing transaction, before any row is written.
    relaxed = sql.index(RELAX)
    assert sql[relaxed + 1].startswith('INSERT INTO "predictions_predictionrequest"')
    assert after == "on"
    assert Prediction.objects.filter(user=alice).count() == 1


@pytest.mark.postgres
def test_predictions_wait_for_the_disk_by_default(alice, cancer_v1):
    assert RELAX not in predict(alice)
    assert Prediction.objects.filter(user=alice).count() == 1


def test_the_setting_changes_nothing_on_sqlite(alice, cancer_v1, settings):
    settings.PREDICTION_LOG_DURABLE = False

    sql = predict(alice)

    assert (RELAX in sql) is (connection.vendor == "postgresql")
    assert Prediction.objects.filter(user=alice).count() == 1
