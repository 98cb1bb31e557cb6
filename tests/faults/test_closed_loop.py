"""The closed loop on a real Celery worker: the drift simulation end to end, and a retraining whose worker is
killed in the middle of training its challenger."""

from __future__ import annotations

import os
import signal
import time

import pytest
from django.utils import timezone

from datasets.models import DatasetVersion
from feedback import quality
from ml import drift_simulation as sim
from models_registry import transition_services
from models_registry.models import ModelVersion, Stage
from tests.faults.conftest import wait_for
from training import retraining_services, simulation
from training.models import Retraining, RetrainingEvent, TrainingRun
from training.tests.helpers import dataset_upload, run_train, version_of
from training.tests.test_retraining import POLICY, _traffic

JOB_TIMEOUT = 180
# Big enough that the worker is still fitting the challenger when the test kills it.
SLOW_FOREST = {"n_estimators": 600, "max_depth": 14}


@pytest.fixture
def loop_site(transactional_db, shared_media, broker_in_test, redis_server):
    """Messages go to a Redis of the test's own, where the test's workers read them."""
    redis = redis_server()
    broker_in_test(redis.url)
    return redis


def test_the_drift_simulation_recovers_with_the_loop_running_on_a_real_worker(
    loop_site, start_celery_worker, figures
):
    worker = start_celery_worker(loop_site.url)
    run = simulation.Simulation(
        scenario=simulation.SCENARIOS["concept"],
        seed=4,
        model="drift-on-a-worker",
        rows=800,
        drift_at=300,
        step=25,
        timeout=JOB_TIMEOUT,
        out=lambda line: None,
    )

    result = run.run()

    assert result.rows_to_trigger is not None, result.events
    assert result.promotions >= 1, result.events
    production = ModelVersion.objects.get(registered_model__name="drift-on-a-worker", stage=Stage.PRODUCTION)
    assert production.version > 1
    # The end's accuracy is a sample of the last ROLLING_ROWS answers (a 95% interval of about ±4 points at
    # 0.95): back, within that noise, to 5 points of the level before the drift.
    window = simulation.ROLLING_ROWS
    _, high = quality.wilson_interval(round(result.accuracy_after * window), window)
    assert high >= result.accuracy_before - 0.05, result.as_dict()
    log = worker.log()
    # The champion, every retraining and every shadow batch ran on the worker, not in this process.
    assert "training.tasks.training_run_execute_task" in log
    assert "training.tasks.retraining_run_task" in log
    assert "predictions.tasks.shadow_batch_run_task" in log
    figures(
        rows_to_trigger=result.rows_to_trigger,
        rows_to_promotion=result.rows_to_promotion,
        rows_to_recovery=result.rows_to_recovery,
        accuracy_before=round(result.accuracy_before, 3),
        accuracy_after=round(result.accuracy_after, 3),
        seconds=result.seconds,
    )


def _retraining(pk: int) -> Retraining:
    return Retraining.objects.get(pk=pk)


def test_a_retraining_whose_worker_is_killed_while_training_is_finished_once_by_another_worker(
    loop_site, start_celery_worker, staff, alice, figures
):
    dataset = dataset_upload(sim.training_frame(500, seed=1), name="concept", target=sim.TARGET, user=staff)
    champion = version_of(
        run_train(dataset, model_name="concept", params={"n_estimators": 30, "max_depth": 6})
    )
    transition_services.model_version_transition(
        model_version=champion, to_stage=Stage.PRODUCTION, user=staff
    )
    retraining_services.policy_services.retraining_policy_set(
        registered_model=champion.registered_model, data={**POLICY, "min_labels": 50}, user=None
    )
    _traffic(alice, n=200, drifted=True, seed=3)
    first = start_celery_worker(loop_site.url)

    retraining = retraining_services.retraining_start(
        registered_model=champion.registered_model,
        trigger=Retraining.Trigger.MANUAL,
        reason="killed on purpose",
        params=SLOW_FOREST,
    )
    run = wait_for(
        lambda: (
            (r := _retraining(retraining.pk)).training_run_id
            and TrainingRun.objects.filter(pk=r.training_run_id, status="running", progress__gte=15).first()
        ),
        "the challenger's training",
        timeout=JOB_TIMEOUT,
        log=first.log,
    )
    time.sleep(1)
    os.killpg(first.process.pid, signal.SIGKILL)
    first.process.wait(timeout=10)
    killed_at = time.monotonic()
    assert _retraining(retraining.pk).status == Retraining.Status.RUNNING
    # Nothing is left to end the dead worker's leases: they run out, then the sweeps (every minute, on
    # beat) send the jobs again. Here the leases are ended by hand.
    Retraining.objects.filter(pk=retraining.pk).update(lease_expires_at=timezone.now())
    TrainingRun.objects.filter(pk=run.pk).update(lease_expires_at=timezone.now())
    second = start_celery_worker(loop_site.url)
    assert retraining_services.retrainings_stale_requeue() == [retraining.pk]

    done = wait_for(
        lambda: (r := _retraining(retraining.pk)).is_terminal and r,
        "the end",
        timeout=JOB_TIMEOUT,
        log=second.log,
    )
    finished = time.monotonic() - killed_at

    assert done.status == Retraining.Status.SUCCEEDED, done.error_message
    assert done.attempts == 2
    assert done.training_run_id == run.pk
    assert TrainingRun.objects.get(pk=run.pk).status == TrainingRun.Status.SUCCEEDED
    assert ModelVersion.objects.filter(training_run_id=run.pk).count() == 1
    assert ModelVersion.objects.filter(registered_model=champion.registered_model).count() == 2
    assert DatasetVersion.objects.filter(parent=champion.dataset_version).count() == 1
    kinds = list(RetrainingEvent.objects.filter(retraining=done).values_list("kind", flat=True))
    assert sorted(kinds) == sorted(set(kinds))  # each decision recorded once
    assert {"triggered", "dataset_derived", "trained"} <= set(kinds)
    figures(seconds_to_finish_after_kill=round(finished, 1), decision=done.decision)
