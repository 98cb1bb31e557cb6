"""PREDICTION_ROLLUP_DELAY_SECONDS: page and API predictions' rollups summed per process and written later
give the same counters as rollups written in each prediction's transaction, and only for what committed."""

from __future__ import annotations

import datetime as dt
import time

import numpy as np
import pytest
from django.db import OperationalError, transaction
from django.db.models import Sum

from mlops_site import rollups as counters
from monitoring.models import FeatureHourly
from monitoring.tests.drift_helpers import drift_version, inputs_draw
from predictions import live_rollups, services
from predictions.models import Channel, LatencyHourly, Prediction, PredictionHourly

# Numeric and categorical features, a missing value of each, and a category the profile never saw.
ROWS = inputs_draw(6, rng=np.random.default_rng(3)).to_dict("records")
ROWS[1]["x"] = None
ROWS[2]["c"] = None
ROWS[3]["c"] = "never seen"

# Real commits: the sums are taken when the prediction's transaction commits.
pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def delayed(settings):
    """A delay no test waits for: the sums are written when a test says so."""
    settings.PREDICTION_ROLLUP_DELAY_SECONDS = 60
    live_rollups.pending.write()
    yield settings
    # Nothing left for the writer thread once the test's database is gone.
    live_rollups.pending.write()


@pytest.fixture
def drifty():
    """A production version with a reference profile, so its feature bins are counted too."""
    return drift_version()


def predict(user, rows=ROWS) -> None:
    for row in rows:
        services.prediction_make(registered_model_name="drifty", rows=[row], user=user, channel=Channel.API)


def counted() -> dict[str, object]:
    return {
        "predictions": set(PredictionHourly.objects.values_list("model_version_id", "hour", "n")),
        "requests": LatencyHourly.objects.aggregate(n=Sum("n"))["n"],
        "features": {
            (f.model_version_id, f.hour, f.source, f.feature, f.bin): (f.n, round(f.value_sum, 6))
            for f in FeatureHourly.objects.all()
        },
    }


def rollups_delete() -> None:
    PredictionHourly.objects.all().delete()
    LatencyHourly.objects.all().delete()
    FeatureHourly.objects.all().delete()


def test_sums_written_later_equal_the_counters_written_with_each_prediction(alice, drifty, settings):
    settings.PREDICTION_ROLLUP_DELAY_SECONDS = 0
    predict(alice)
    immediate = counted()
    assert immediate["requests"] == len(ROWS)
    assert immediate["features"], "the version has a reference profile: its feature bins are counted"
    rollups_delete()

    settings.PREDICTION_ROLLUP_DELAY_SECONDS = 60
    try:
        predict(alice)
        # Stored at once, counted later.
        assert Prediction.objects.count() == 2 * len(ROWS)
        assert not PredictionHourly.objects.exists()
        assert not FeatureHourly.objects.exists()
        assert live_rollups.pending.rows == len(ROWS)

        assert live_rollups.pending.write() == len(ROWS)
    finally:
        live_rollups.pending.write()

    assert counted() == immediate
    assert live_rollups.pending.rows == 0


def test_a_prediction_rolled_back_with_its_transaction_is_counted_nowhere(alice, drifty, delayed):
    with transaction.atomic():
        predict(alice, ROWS[:1])
        transaction.set_rollback(True)

    assert live_rollups.pending.rows == 0
    assert live_rollups.pending.write() == 0
    assert not Prediction.objects.exists()
    assert not PredictionHourly.objects.exists()


def test_a_failed_write_keeps_the_sums_for_the_next_one(alice, drifty, delayed, monkeypatch, caplog):
    predict(alice, ROWS[:2])
    real = counters.counters_add
    calls = {"n": 0}

    def fails_once(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 1:
            raise OperationalError("database is locked")
        return real(*args, **kwargs)

    monkeypatch.setattr(counters, "counters_add", fails_once)

    assert live_rollups.pending.write() == 0
    assert "could not be written" in caplog.text
    assert not PredictionHourly.objects.exists()
    assert not FeatureHourly.objects.exists()
    predict(alice, ROWS[2:3])  # added to the kept sums

    assert live_rollups.pending.write() == 3
    assert PredictionHourly.objects.aggregate(n=Sum("n"))["n"] == 3
    assert LatencyHourly.objects.aggregate(n=Sum("n"))["n"] == 3


def test_the_request_that_finds_the_sums_due_writes_them(alice, drifty, delayed, monkeypatch):
    delayed.PREDICTION_ROLLUP_DELAY_SECONDS = 0.05
    # No writer thread: only the request can have written them. Fresh sums too, since the writer thread an
    # earlier test started keeps running and writes the sums it belongs to when it wakes.
    monkeypatch.setattr(live_rollups.PendingRollups, "_writer_start", lambda self: None)
    monkeypatch.setattr(live_rollups, "pending", live_rollups.PendingRollups())
    predict(alice, ROWS[:1])
    assert not PredictionHourly.objects.exists()
    time.sleep(0.1)

    predict(alice, ROWS[1:2])

    assert PredictionHourly.objects.aggregate(n=Sum("n"))["n"] == 2
    assert live_rollups.pending.rows == 0


def test_the_writer_thread_writes_the_sums_when_requests_stop(alice, drifty, delayed):
    delayed.PREDICTION_ROLLUP_DELAY_SECONDS = 0.2
    predict(alice, ROWS[:1])

    deadline = time.monotonic() + 20
    while not PredictionHourly.objects.exists() and time.monotonic() < deadline:
        time.sleep(0.05)

    assert PredictionHourly.objects.aggregate(n=Sum("n"))["n"] == 1
    assert FeatureHourly.objects.exists()
    assert live_rollups.pending.rows == 0


def test_a_forked_child_starts_without_the_parents_sums(settings):
    """Each process writes its own sums: a child (a worker forked after the app was loaded) that kept
    the parent's would write them a second time."""
    import os
    import types

    settings.PREDICTION_ROLLUP_DELAY_SECONDS = 60
    version = types.SimpleNamespace(pk=1)
    answered = live_rollups.Answered(
        model_version=version,
        hour=dt.datetime(2026, 1, 1, 10, tzinfo=dt.UTC),
        latency_ms=1.0,
        columns={"x": np.array([1.0])},
        predictions=[1],
        confidences=[None],
    )
    try:
        live_rollups.pending.add(answered)
        assert live_rollups.pending.rows == 1
        child = os.fork()
        if child == 0:  # pragma: no cover - the child reports through its exit code
            os._exit(0 if live_rollups.pending.rows == 0 else 1)
        _, status = os.waitpid(child, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert live_rollups.pending.rows == 1  # the parent's are still the parent's
    finally:
        live_rollups.pending.forget_after_fork()  # nothing of this fake version left for the writer
