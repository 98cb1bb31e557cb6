"""Tests of shadow scoring: the sweep that cuts production predictions into batches, the leased job that
scores a batch with the challenger on a worker, and the response path it never touches."""

from __future__ import annotations

import datetime as dt
import time

import numpy as np
import pytest
from django.utils import timezone
from kombu import Connection

from jobs import engine
from mlops_site.celery import app
from models_registry import challenger_services
from models_registry.models import ModelVersion, RegisteredModel
from predictions import model_cache, services, shadow, tasks
from predictions.models import Prediction, ShadowBatch, ShadowPrediction
from predictions.tests.batch_helpers import cancer_rows, csv_bytes, job_run, job_start
from predictions.tests.helpers import make_model_version, trained_model

CANCER = trained_model("cancer")
CHALLENGER = trained_model("cancer", algorithm="logistic_regression")
ROWS = CANCER.sample_rows
#: Seconds a real worker may take to score the batches.
WORKER_TIMEOUT = 90


class Killed(BaseException):
    """The worker dying in the middle of a batch."""


def later() -> dt.datetime:
    """A sweep's clock past the settling time of every row made so far."""
    return timezone.now() + dt.timedelta(seconds=shadow.SETTLE_SECONDS + 1)


@pytest.fixture
def sent(monkeypatch) -> list[int]:
    """Batches sent to a worker (on commit), recorded instead of sent."""
    sent: list[int] = []
    monkeypatch.setattr(shadow, "_enqueue", sent.append)
    return sent


@pytest.fixture
def cancer_v2(cancer_v1):
    """Version 2 of 'cancer' in staging: the challenger of v1."""
    return make_model_version(trained=CHALLENGER, name="cancer", version=2, stage="staging")


def mode_set(mode: str) -> RegisteredModel:
    return challenger_services.challenger_mode_set(
        registered_model=RegisteredModel.objects.get(name="cancer"), mode=mode, user=None
    )


@pytest.fixture
def in_shadow(cancer_v2) -> RegisteredModel:
    return mode_set("shadow")


def predict(user, count: int = 1, channel: str = "api") -> list[Prediction]:
    rows = (ROWS * count)[:count]
    return services.prediction_make(
        registered_model_name="cancer", rows=rows, user=user, channel=channel
    ).predictions


def covered(batches) -> list[int]:
    """The prediction ids the batches cover, in order, as the worker reads them."""
    ids = []
    for batch in sorted(batches, key=lambda b: b.first_id):
        ids.extend(
            Prediction.objects.filter(
                pk__gte=batch.first_id,
                pk__lte=batch.last_id,
                model_version_id=batch.champion_id,
                channel__in=shadow.SHADOWED_CHANNELS,
            )
            .order_by("pk")
            .values_list("pk", flat=True)
        )
    return ids


def challenger_answers(predictions: list[Prediction]) -> list:
    version = ModelVersion.objects.select_related("registered_model").get(version=2)
    predictor = model_cache.predictors.get(model_cache.ModelArtifacts.of_version(version))
    labels, _ = predictor.predict_columns(
        {c["name"]: np.asarray([p.inputs[c["name"]] for p in predictions]) for c in version.feature_schema}
    )
    return labels


# ------------------------------------------------------------------------------
# The sweep
# ------------------------------------------------------------------------------
def test_the_sweep_cuts_every_production_row_into_batches_once(
    alice, in_shadow, sent, settings, django_capture_on_commit_callbacks
):
    settings.SHADOW_BATCH_ROWS = 3
    made = predict(alice, 4) + predict(alice, 1, channel="page") + predict(alice, 2)

    with django_capture_on_commit_callbacks(execute=True):
        batches = shadow.shadow_batches_create(now=later())

    assert [(b.last_id - b.first_id + 1) for b in batches] == [3, 3, 1]
    assert covered(batches) == [p.pk for p in made]
    assert {(b.champion.version, b.challenger.version, b.status) for b in batches} == {(1, 2, "queued")}
    assert sent == [b.pk for b in batches]


def test_a_second_sweep_cuts_nothing_and_a_later_one_goes_on_after_the_last_batch(alice, in_shadow, sent):
    first = predict(alice, 3)
    assert len(shadow.shadow_batches_create(now=later())) == 1

    assert shadow.shadow_batches_create(now=later()) == []
    second = predict(alice, 2)
    (batch,) = shadow.shadow_batches_create(now=later())

    assert (batch.first_id, batch.last_id) == (second[0].pk, second[-1].pk)
    assert covered(ShadowBatch.objects.all()) == [p.pk for p in first + second]


def test_the_sweep_task_runs_twice_without_cutting_a_row_twice(alice, in_shadow, sent, monkeypatch):
    monkeypatch.setattr(shadow, "SETTLE_SECONDS", 0)
    predict(alice, 3)

    assert tasks.shadow_batches_create_task.apply().get() == 1
    assert tasks.shadow_batches_create_task.apply().get() == 0
    assert ShadowBatch.objects.count() == 1


def test_batch_job_rows_are_not_shadowed(alice, in_shadow, sent):
    job = job_run(job_start(alice, csv_bytes(cancer_rows(5))))
    assert Prediction.objects.filter(batch_job=job).count() == 5
    (made,) = predict(alice)

    batches = shadow.shadow_batches_create(now=later())

    assert covered(batches) == [made.pk]
    shadow.shadow_batch_run(batch_id=batches[0].pk)
    assert list(ShadowPrediction.objects.values_list("prediction_id", flat=True)) == [made.pk]


@pytest.mark.parametrize("mode", ["off", "canary"])
def test_nothing_is_cut_unless_the_model_is_in_shadow_mode(alice, cancer_v2, sent, mode):
    mode_set(mode)
    predict(alice, 3)

    assert shadow.shadow_batches_create(now=later()) == []


def test_nothing_is_cut_once_the_challenger_left_staging(alice, in_shadow, sent):
    predict(alice, 3)
    ModelVersion.objects.filter(version=2).update(stage="archived")

    assert shadow.shadow_batches_create(now=later()) == []


def test_rows_from_before_the_mode_started_and_rows_still_settling_wait(alice, cancer_v2, sent):
    before = predict(alice, 2)
    Prediction.objects.update(created_at=timezone.now() - dt.timedelta(minutes=5))
    mode_set("shadow")
    fresh = predict(alice, 2)

    assert shadow.shadow_batches_create() == []
    (batch,) = shadow.shadow_batches_create(now=later())

    assert covered([batch]) == [p.pk for p in fresh]
    assert before[-1].pk < batch.first_id


def test_a_new_challenger_starts_from_its_own_move_to_staging(alice, in_shadow, sent, staff):
    from models_registry import transition_services

    predict(alice, 2)
    shadow.shadow_batches_create(now=later())
    Prediction.objects.update(created_at=timezone.now() - dt.timedelta(minutes=5))
    newer = make_model_version(trained=CHALLENGER, name="cancer", version=3, stage="none")
    transition_services.model_version_transition(model_version=newer, to_stage="staging", user=staff)
    fresh = predict(alice, 2)

    (batch,) = shadow.shadow_batches_create(now=later())

    assert batch.challenger_id == newer.pk
    assert covered([batch]) == [p.pk for p in fresh]


# ------------------------------------------------------------------------------
# The batch job
# ------------------------------------------------------------------------------
def test_a_batch_stores_the_challenger_s_answer_to_each_row_with_the_champion_and_time(
    alice, in_shadow, sent
):
    made = predict(alice, 3)
    (batch,) = shadow.shadow_batches_create(now=later())

    outcome = shadow.shadow_batch_run(batch_id=batch.pk)

    assert outcome.status == "succeeded"
    batch.refresh_from_db()
    assert (batch.status, batch.rows_scored, batch.attempts) == ("succeeded", 3, 1)
    shadows = list(ShadowPrediction.objects.order_by("prediction_id"))
    assert [s.prediction_id for s in shadows] == [p.pk for p in made]
    assert [s.prediction_value for s in shadows] == challenger_answers(made)
    assert {(s.model_version.version, s.champion.version) for s in shadows} == {(2, 1)}
    assert [s.prediction_created_at for s in shadows] == [p.created_at for p in made]
    assert all(s.confidence == max(s.probabilities.values()) for s in shadows)


def test_the_batch_task_run_twice_scores_each_row_once(alice, in_shadow, sent):
    made = predict(alice, 4)
    (batch,) = shadow.shadow_batches_create(now=later())

    assert tasks.shadow_batch_run_task.apply(args=[batch.pk]).get() == "succeeded"
    assert tasks.shadow_batch_run_task.apply(args=[batch.pk]).get() == "skipped"

    assert ShadowPrediction.objects.count() == len(made)


def test_rows_another_attempt_stored_are_kept_once(alice, in_shadow, sent):
    made = predict(alice, 3)
    (batch,) = shadow.shadow_batches_create(now=later())
    ShadowPrediction.objects.create(
        prediction=made[0],
        model_version_id=batch.challenger_id,
        champion_id=batch.champion_id,
        prediction_value="stored before",
        prediction_created_at=made[0].created_at,
    )

    shadow.shadow_batch_run(batch_id=batch.pk)

    assert ShadowPrediction.objects.count() == 3
    assert ShadowPrediction.objects.get(prediction=made[0]).prediction_value == "stored before"


def test_a_batch_whose_worker_died_is_finished_once_by_the_stale_sweep(alice, in_shadow, sent, monkeypatch):
    made = predict(alice, 5)
    (batch,) = shadow.shadow_batches_create(now=later())
    version = ModelVersion.objects.select_related("registered_model").get(version=2)
    predictor = model_cache.predictors.get(model_cache.ModelArtifacts.of_version(version))
    real = predictor.predict_columns

    def dies(columns):
        raise Killed("the worker was killed mid-batch")

    monkeypatch.setattr(predictor, "predict_columns", dies)
    with pytest.raises(Killed):
        shadow.shadow_batch_run(batch_id=batch.pk)
    batch.refresh_from_db()
    assert (batch.status, batch.attempts, ShadowPrediction.objects.count()) == ("running", 1, 0)
    assert shadow.shadow_batches_stale_requeue() == []

    monkeypatch.setattr(predictor, "predict_columns", real)
    ShadowBatch.objects.filter(pk=batch.pk).update(lease_expires_at=timezone.now() - dt.timedelta(seconds=1))
    monkeypatch.setattr(
        shadow, "_enqueue", lambda batch_id: tasks.shadow_batch_run_task.apply(args=[batch_id])
    )
    assert shadow.shadow_batches_stale_requeue() == [batch.pk]

    batch.refresh_from_db()
    assert (batch.status, batch.attempts, batch.rows_scored) == ("succeeded", 2, 5)
    assert sorted(ShadowPrediction.objects.values_list("prediction_id", flat=True)) == [p.pk for p in made]
    assert shadow.shadow_batches_stale_requeue() == []


def test_the_stale_sweep_task_runs_twice_harmlessly(alice, in_shadow, sent):
    predict(alice, 2)
    (batch,) = shadow.shadow_batches_create(now=later())
    engine.job_claim(shadow.SHADOWS, job_id=batch.pk)
    ShadowBatch.objects.filter(pk=batch.pk).update(lease_expires_at=timezone.now() - dt.timedelta(seconds=1))

    assert tasks.shadow_batches_stale_requeue_task.apply().get() == 1
    assert tasks.shadow_batches_stale_requeue_task.apply().get() == 1
    assert sent == [batch.pk, batch.pk]
    assert shadow.shadow_batch_run(batch_id=batch.pk).status == "succeeded"
    assert shadow.shadow_batch_run(batch_id=batch.pk).status == "skipped"
    assert ShadowPrediction.objects.count() == 2


def test_rows_the_challenger_s_schema_refuses_get_no_shadow(alice, in_shadow, sent):
    schema = [*CHALLENGER.feature_schema, {"name": "extra", "kind": "numeric"}]
    ModelVersion.objects.filter(version=2).update(feature_schema=schema)
    predict(alice, 2)
    (batch,) = shadow.shadow_batches_create(now=later())

    assert shadow.shadow_batch_run(batch_id=batch.pk).status == "succeeded"

    batch.refresh_from_db()
    assert (batch.status, batch.rows_scored) == ("succeeded", 0)
    assert not ShadowPrediction.objects.exists()


def test_a_challenger_whose_model_file_is_missing_fails_the_batch_with_the_reason(alice, in_shadow, sent):
    from mlops_site import storage

    predict(alice, 2)
    (batch,) = shadow.shadow_batches_create(now=later())
    storage.delete(CHALLENGER.skops_key)
    storage.delete(CHALLENGER.onnx_key)

    outcome = shadow.shadow_batch_run(batch_id=batch.pk)

    batch.refresh_from_db()
    assert (outcome.status, batch.status) == ("failed", "failed")
    assert "missing" in batch.error_message


# ------------------------------------------------------------------------------
# The response path
# ------------------------------------------------------------------------------
def test_a_prediction_in_shadow_mode_never_calls_or_loads_the_challenger(alice, in_shadow, monkeypatch):
    loaded: list[str] = []
    original = model_cache.predictor_load

    def recording(artifacts):
        loaded.append(artifacts.label)
        return original(artifacts)

    monkeypatch.setattr(model_cache, "predictor_load", recording)
    model_cache.predictors.clear()

    outcome = services.prediction_make(registered_model_name="cancer", rows=ROWS, user=alice, channel="api")

    assert loaded == ["cancer v1"]
    assert (
        model_cache.ModelArtifacts.of_version(ModelVersion.objects.get(version=2))
        not in model_cache.predictors
    )
    assert [p.model_version.version for p in outcome.predictions] == [1, 1, 1]
    assert not outcome.challenger_rows
    assert not ShadowBatch.objects.exists()
    assert not ShadowPrediction.objects.exists()


# ------------------------------------------------------------------------------
# PostgreSQL and a real worker
# ------------------------------------------------------------------------------
@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_sweeps_running_at_once_cut_each_row_once(alice, cancer_v2, sent, settings):
    from models_registry.tests.test_registry_postgres import run_together

    settings.SHADOW_BATCH_ROWS = 4
    mode_set("shadow")
    made = predict(alice, 10) + predict(alice, 7)
    now = later()

    outcomes = run_together(lambda index: shadow.shadow_batches_create(now=now), 4)

    assert outcomes == [None] * 4
    batches = list(ShadowBatch.objects.all())
    assert covered(batches) == [p.pk for p in made]
    for batch in batches:
        shadow.shadow_batch_run(batch_id=batch.pk)
    assert ShadowPrediction.objects.count() == len(made)


@pytest.mark.worker
def test_a_real_worker_scores_the_batches_the_sweep_sends(
    start_celery_worker, alice, settings, tmp_path, monkeypatch
):
    if not settings.AWS_STORAGE_BUCKET_NAME:
        # The worker's file storage is the media folder under its DATA_DIR: store the models there.
        media = tmp_path / "worker-data" / "media"
        settings.STORAGES = {
            **settings.STORAGES,
            "default": {**settings.STORAGES["default"], "OPTIONS": {"location": str(media)}},
        }
        settings.MEDIA_ROOT = media
    settings.SHADOW_BATCH_ROWS = 5
    make_model_version(trained=CANCER, name="cancer", version=1)
    make_model_version(trained=CHALLENGER, name="cancer", version=2, stage="staging")
    mode_set("shadow")
    worker = start_celery_worker("filesystem://")
    app.conf.task_always_eager = False

    def send(batch_id: int) -> None:
        with Connection(worker.broker_url, transport_options=worker.transport_options) as conn:
            tasks.shadow_batch_run_task.apply_async(args=[batch_id], connection=conn)

    monkeypatch.setattr(shadow, "_enqueue", send)
    made = predict(alice, 12)

    batches = shadow.shadow_batches_create(now=later())

    assert len(batches) == 3
    deadline = time.monotonic() + WORKER_TIMEOUT
    while ShadowBatch.objects.exclude(status="succeeded").exists():
        if worker.process.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"the batches were not scored:\n{worker.log()[-3000:]}")
        time.sleep(0.2)
    assert sorted(ShadowPrediction.objects.values_list("prediction_id", flat=True)) == [p.pk for p in made]
