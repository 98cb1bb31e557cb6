"""Tests for the training task: idempotency, crash recovery, leases, transient failures and clean-up."""

from __future__ import annotations

import time
from datetime import timedelta
from unittest import mock

import pytest
from celery.exceptions import Retry
from django.utils import timezone

from jobs import policy as leased_tasks
from mlops_site import storage
from models_registry import mlflow_gateway
from models_registry.models import ModelVersion
from training import execution, tasks
from training import services as training_services
from training.models import TrainingRun
from training.tests.helpers import FAST_FOREST, cancer_frame, dataset_upload, stored_model_files, version_of

pytestmark = pytest.mark.django_db


class SimulatedCrash(BaseException):
    """Stands for the worker process dying: not an Exception, so nothing in the service handles it."""


@pytest.fixture
def cancer():
    return dataset_upload(cancer_frame(), name="cancer", target="diagnosis")


@pytest.fixture
def queued(cancer):
    return training_services.training_run_create(
        dataset_version=cancer,
        model_name="cancer",
        algorithm="random_forest",
        params=FAST_FOREST,
        created_by=None,
    )


def mlflow_versions(name: str = "cancer") -> list[int]:
    return sorted(
        int(v.version) for v in mlflow_gateway.connection.client().search_model_versions(f"name = '{name}'")
    )


def mlflow_runs_with_key(run: TrainingRun) -> list[str]:
    client = mlflow_gateway.connection.client()
    experiment_id = mlflow_gateway.experiment_ensure()
    found = client.search_runs([experiment_id], filter_string=f"tags.`mlops.training_run` = '{run.key}'")
    return [r.info.status for r in found]


def expire_lease(run: TrainingRun) -> None:
    TrainingRun.objects.filter(pk=run.pk).update(lease_expires_at=timezone.now() - timedelta(seconds=1))


def test_running_the_task_twice_registers_once_and_changes_nothing(queued):
    tasks.training_run_execute_task.apply(args=[queued.pk])
    queued.refresh_from_db()
    first = version_of(queued)
    finished_at = queued.finished_at

    result = tasks.training_run_execute_task.apply(args=[queued.pk])

    assert result.get() == "skipped"
    queued.refresh_from_db()
    assert queued.status == TrainingRun.Status.SUCCEEDED
    assert queued.attempts == 1
    assert queued.finished_at == finished_at
    assert list(ModelVersion.objects.values_list("pk", flat=True)) == [first.pk]
    assert mlflow_versions() == [1]
    assert mlflow_runs_with_key(queued) == ["FINISHED"]


def test_a_crash_after_registration_is_recovered_by_the_retry_without_a_second_version(queued):
    real_record = execution._model_version_record
    with (
        mock.patch.object(execution, "_model_version_record", side_effect=SimulatedCrash),
        pytest.raises(SimulatedCrash),
    ):
        training_services.training_run_execute(run_id=queued.pk)
    queued.refresh_from_db()
    assert queued.status == TrainingRun.Status.RUNNING
    assert mlflow_versions() == [1]
    assert not ModelVersion.objects.exists()

    # The broker redelivers the message; the dead worker's lease has run out by then.
    expire_lease(queued)
    with mock.patch.object(execution, "_model_version_record", wraps=real_record) as record:
        outcome = training_services.training_run_execute(run_id=queued.pk)

    assert outcome.status == "succeeded"
    record.assert_called_once()
    queued.refresh_from_db()
    assert queued.status == TrainingRun.Status.SUCCEEDED
    assert queued.attempts == 2
    version = version_of(queued)
    assert version.mlflow_version == 1
    assert mlflow_versions() == [1]
    assert mlflow_runs_with_key(queued) == ["FINISHED"]
    assert ModelVersion.objects.count() == 1


def test_a_failure_after_registration_deletes_the_mlflow_version_and_the_stored_files(queued):
    with mock.patch.object(execution, "_model_version_record", side_effect=RuntimeError("disk on fire")):
        outcome = training_services.training_run_execute(run_id=queued.pk)

    assert outcome.status == "failed"
    queued.refresh_from_db()
    assert queued.status == TrainingRun.Status.FAILED
    assert "Unexpected error (RuntimeError): disk on fire" in queued.error_message
    assert mlflow_versions() == []
    assert not ModelVersion.objects.exists()
    assert stored_model_files() == []


def test_stored_files_shared_with_an_existing_version_survive_a_failed_run(queued, cancer):
    tasks.training_run_execute_task.apply(args=[queued.pk])
    kept = version_of(TrainingRun.objects.get(pk=queued.pk))
    twin = training_services.training_run_create(
        dataset_version=cancer,
        model_name="cancer",
        algorithm="random_forest",
        params=FAST_FOREST,
        created_by=None,
    )

    with mock.patch.object(execution, "_model_version_record", side_effect=RuntimeError("boom")):
        training_services.training_run_execute(run_id=twin.pk)

    assert storage.exists(kept.skops_key)
    assert storage.exists(kept.onnx_key)
    assert mlflow_versions() == [1]


def test_the_task_retries_later_when_another_attempt_holds_the_run(queued):
    TrainingRun.objects.filter(pk=queued.pk).update(
        status="running", attempts=1, lease_expires_at=timezone.now() + timedelta(seconds=60)
    )

    with (
        mock.patch.object(tasks.training_run_execute_task, "retry", side_effect=Retry) as retry,
        pytest.raises(Retry),
    ):
        tasks.training_run_execute_task.apply(args=[queued.pk], throw=True)

    assert retry.call_args.kwargs["countdown"] >= 60


def test_an_expired_lease_is_reclaimed_and_the_run_finishes(queued):
    TrainingRun.objects.filter(pk=queued.pk).update(
        status="running", attempts=1, lease_expires_at=timezone.now() - timedelta(seconds=1)
    )

    outcome = training_services.training_run_execute(run_id=queued.pk)

    assert outcome.status == "succeeded"
    queued.refresh_from_db()
    assert queued.attempts == 2
    assert queued.lease_expires_at is None
    assert version_of(queued).version == 1


def test_a_run_that_keeps_killing_its_worker_is_given_up(queued):
    TrainingRun.objects.filter(pk=queued.pk).update(
        status="running",
        attempts=training_services.MAX_ATTEMPTS,
        lease_expires_at=timezone.now() - timedelta(seconds=1),
    )

    with mock.patch.object(execution, "model_train") as train:
        outcome = training_services.training_run_execute(run_id=queued.pk)

    train.assert_not_called()
    assert outcome.status == "failed"
    queued.refresh_from_db()
    assert queued.status == TrainingRun.Status.FAILED
    assert "interrupted 3 times" in queued.error_message


def test_a_transient_mlflow_failure_releases_the_lease_and_the_retry_succeeds(queued):
    real_register = mlflow_gateway.model_register
    calls = []

    def flaky_register(**kwargs):
        calls.append(kwargs)
        if len(calls) == 1:
            raise mlflow_gateway.RegistryUnavailable("MLflow is restarting")
        return real_register(**kwargs)

    with mock.patch.object(mlflow_gateway, "model_register", side_effect=flaky_register):
        with pytest.raises(mlflow_gateway.RegistryUnavailable):
            training_services.training_run_execute(run_id=queued.pk)
        queued.refresh_from_db()
        assert queued.status == TrainingRun.Status.RUNNING
        assert queued.lease_expires_at <= timezone.now()
        assert queued.progress_message.startswith("Waiting to retry: MLflow is restarting")

        outcome = training_services.training_run_execute(run_id=queued.pk)

    assert outcome.status == "succeeded"
    assert mlflow_versions() == [1]
    assert mlflow_runs_with_key(queued) == ["FINISHED"]


def test_the_task_retries_transient_failures_then_fails_the_run(queued):
    with mock.patch.object(
        mlflow_gateway, "model_register", side_effect=mlflow_gateway.RegistryUnavailable("MLflow is down")
    ) as register:
        # Each delivery of the retried message, as the worker would run them.
        for retries in range(leased_tasks.TRANSIENT_MAX_RETRIES):
            with pytest.raises(Retry):
                tasks.training_run_execute_task.apply(args=[queued.pk], retries=retries, throw=True)
        result = tasks.training_run_execute_task.apply(
            args=[queued.pk], retries=leased_tasks.TRANSIENT_MAX_RETRIES, throw=True
        )

    assert result.get() == "failed"
    # One registration per delivery, and one more when giving up, to find a version to delete.
    assert register.call_count == leased_tasks.TRANSIENT_MAX_RETRIES + 2
    queued.refresh_from_db()
    assert queued.status == TrainingRun.Status.FAILED
    assert "Gave up after 7 attempts" in queued.error_message
    assert "MLflow is down" in queued.error_message
    assert mlflow_versions() == []


def test_an_error_escaping_the_service_marks_the_run_failed(queued, monkeypatch):
    def broken(*, run_id):
        raise RuntimeError("bug outside the service's handling")

    monkeypatch.setattr(training_services, "training_run_execute", broken)

    result = tasks.training_run_execute_task.apply(args=[queued.pk], throw=False)

    assert isinstance(result.result, RuntimeError)
    queued.refresh_from_db()
    assert (queued.status, queued.progress_message) == ("failed", "Failed")
    assert queued.error_message == "The worker task failed (RuntimeError): bug outside the service's handling"


def test_an_attempt_that_lost_its_lease_stops_without_touching_the_run(queued):
    real_train = execution.model_train

    def taken_over(**kwargs):
        # Another worker reclaims the run while this one is fitting.
        TrainingRun.objects.filter(pk=queued.pk).update(attempts=2)
        return real_train(**kwargs)

    with mock.patch.object(execution, "model_train", side_effect=taken_over):
        outcome = training_services.training_run_execute(run_id=queued.pk)

    assert outcome.status == "lost"
    queued.refresh_from_db()
    assert (queued.status, queued.attempts, queued.error_message) == ("running", 2, "")
    assert mlflow_runs_with_key(queued) == []
    assert stored_model_files() == []


def test_a_failure_after_the_lease_was_lost_does_not_fail_the_other_attempts_run(queued):
    def taken_over_then_broken(**kwargs):
        TrainingRun.objects.filter(pk=queued.pk).update(attempts=2)
        raise RuntimeError("late failure")

    with mock.patch.object(execution, "model_train", side_effect=taken_over_then_broken):
        outcome = training_services.training_run_execute(run_id=queued.pk)

    assert outcome.status == "lost"
    queued.refresh_from_db()
    assert (queued.status, queued.error_message) == ("running", "")


def test_stale_runs_are_sent_again(cancer, queued):
    old = timezone.now() - timedelta(minutes=training_services.STALE_QUEUED_MINUTES + 1)
    TrainingRun.objects.filter(pk=queued.pk).update(created_at=old)
    fresh = training_services.training_run_create(
        dataset_version=cancer,
        model_name="cancer",
        algorithm="random_forest",
        params=FAST_FOREST,
        created_by=None,
    )
    dead = training_services.training_run_create(
        dataset_version=cancer,
        model_name="cancer",
        algorithm="random_forest",
        params=FAST_FOREST,
        created_by=None,
    )
    TrainingRun.objects.filter(pk=dead.pk).update(status="running", lease_expires_at=timezone.now())

    with mock.patch.object(tasks.training_run_execute_task, "delay") as delay:
        requeued = tasks.training_runs_stale_requeue_task.apply().get()

    assert requeued == 2
    assert sorted(call.args[0] for call in delay.call_args_list) == sorted([queued.pk, dead.pk])
    assert fresh.pk not in [call.args[0] for call in delay.call_args_list]


@pytest.mark.django_db(transaction=True)
def test_the_lease_is_renewed_while_a_long_step_runs(cancer, monkeypatch):
    monkeypatch.setattr(training_services.RUNS, "lease_seconds", 1)
    monkeypatch.setattr(training_services.RUNS, "renew_seconds", 0.1)
    # Committed at once here; the run is executed below, as the worker would, not by the eager hand-off.
    with mock.patch.object(tasks.training_run_execute_task, "delay"):
        run = training_services.training_run_create(
            dataset_version=cancer,
            model_name="cancer",
            algorithm="random_forest",
            params=FAST_FOREST,
            created_by=None,
        )
    real_train = execution.model_train
    seen = {}

    def slow_train(**kwargs):
        claimed_until = TrainingRun.objects.get(pk=run.pk).lease_expires_at
        time.sleep(1.5)
        seen["renewed_until"] = TrainingRun.objects.get(pk=run.pk).lease_expires_at
        seen["claimed_until"] = claimed_until
        # Longer than the lease: only the heartbeat keeps another attempt from taking the run now.
        seen["second_attempt"] = training_services.training_run_execute(run_id=run.pk).status
        return real_train(**kwargs)

    with mock.patch.object(execution, "model_train", side_effect=slow_train):
        outcome = training_services.training_run_execute(run_id=run.pk)

    assert outcome.status == "succeeded"
    assert seen["renewed_until"] > seen["claimed_until"] + timedelta(seconds=1)
    assert seen["second_attempt"] == "busy"
    run.refresh_from_db()
    assert run.attempts == 1
