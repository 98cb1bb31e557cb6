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


@pytest.fixture
def summed_later(settings):
    """Rollups summed per process (the default outside the tests): nothing else joins the rows' writes."""
    from predictions import live_rollups

    settings.PREDICTION_ROLLUP_DELAY_SECONDS = 60
    live_rollups.pending.write()
    yield settings
    live_rollups.pending.write()


def _storing(sql: list[str]) -> list[str]:
    return [q for q in sql if '"predictions_prediction' in q]


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("durable", [True, False])
def test_with_rollups_summed_later_one_statement_stores_a_call(alice, cancer_v1, summed_later, durable):
    summed_later.PREDICTION_LOG_DURABLE = durable
    rows = trained_model("cancer").sample_rows[:3]
    with CaptureQueriesContext(connection) as queries:
        outcome = services.prediction_make(
            registered_model_name="cancer", rows=rows, user=alice, channel=Channel.API
        )
    sql = [q["sql"] for q in queries.captured_queries]

    (statement,) = _storing(sql)
    assert statement.startswith('WITH p AS (INSERT INTO "predictions_predictionrequest"')
    assert ("set_config('synchronous_commit', 'off', true)" in statement) is not durable
    assert RELAX not in sql
    stored = {p.pk: p for p in Prediction.objects.filter(user=alice)}
    assert [stored[p.pk].row_index for p in outcome.predictions] == [0, 1, 2]
    assert all(stored[p.pk].request_id == outcome.request.pk for p in outcome.predictions)
    assert outcome.request.n_rows == 3


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_call_with_keys_is_stored_in_a_transaction_with_its_keys(alice, cancer_v1, summed_later):
    with CaptureQueriesContext(connection) as queries:
        services.prediction_make(
            registered_model_name="cancer", rows=[ROW], user=alice, channel=Channel.API, keys=["order-1"]
        )
    storing = _storing([q["sql"] for q in queries.captured_queries])

    assert not any(q.startswith("WITH p AS") for q in storing)
    assert Prediction.objects.get(user=alice).key.key == "order-1"
