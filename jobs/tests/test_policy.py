"""Tests of the leased-job task policy: back-off, busy retries and the on_failure every job task shares."""

from __future__ import annotations

from unittest import mock

import pytest
from celery.exceptions import Retry

from jobs import engine, policy
from predictions import shadow
from predictions import tasks as prediction_tasks
from predictions.batch import services as batch_services
from training import retraining_services
from training import services as training_services
from training import tasks as training_tasks

LEASED_TASKS = [
    (training_tasks.training_run_execute_task, training_services, "training_run_execute", "run_id"),
    (prediction_tasks.batch_prediction_run_task, batch_services, "batch_prediction_run", "job_id"),
    (prediction_tasks.shadow_batch_run_task, shadow, "shadow_batch_run", "batch_id"),
    (training_tasks.retraining_run_task, retraining_services, "retraining_run", "retraining_id"),
]


def task_class(task):
    """The task's own class (shared_task hands out a proxy), where its job_fail service is set."""
    return type(task._get_current_object())


def test_transient_retries_wait_longer_each_time_up_to_ten_minutes():
    assert [policy.backoff_seconds(n) for n in range(7)] == [30, 60, 120, 240, 480, 600, 600]


@pytest.mark.parametrize(
    ("task", "fail"),
    [
        (training_tasks.training_run_execute_task, training_services.training_run_fail),
        (prediction_tasks.batch_prediction_run_task, batch_services.batch_prediction_fail),
        (prediction_tasks.shadow_batch_run_task, shadow.shadow_batch_fail),
        (training_tasks.retraining_run_task, retraining_services.retraining_fail),
    ],
)
def test_every_job_task_runs_on_the_one_base_with_its_fail_service(task, fail):
    assert isinstance(task, policy.LeasedJobTask)
    assert task.job_fail is fail
    assert (task.acks_late, task.ignore_result, task.max_retries) == (True, True, None)


@pytest.mark.parametrize(("task", "module", "service", "argument"), LEASED_TASKS)
def test_on_failure_marks_the_job_failed_through_its_fail_service(task, module, service, argument):
    with mock.patch.object(task_class(task), "job_fail") as fail:
        task.on_failure(RuntimeError("disk on fire"), "task-id", (7,), {}, None)
        task.on_failure(KeyError("columns"), "task-id", (), {argument: 8}, None)

    assert fail.call_args_list == [
        mock.call(**{argument: 7}, message="The worker task failed (RuntimeError): disk on fire"),
        mock.call(**{argument: 8}, message="The worker task failed (KeyError): 'columns'"),
    ]


@pytest.mark.parametrize(("task", "module", "service", "argument"), LEASED_TASKS)
def test_on_failure_logs_a_fail_service_that_fails_itself(task, module, service, argument, caplog):
    with mock.patch.object(task_class(task), "job_fail", side_effect=RuntimeError("database is gone")):
        task.on_failure(RuntimeError("boom"), "task-id", (7,), {}, None)

    assert "7: the job could not be marked failed" in caplog.text


@pytest.mark.parametrize(("task", "module", "service", "argument"), LEASED_TASKS)
def test_on_failure_without_a_job_id_does_nothing(task, module, service, argument):
    with mock.patch.object(task_class(task), "job_fail") as fail:
        task.on_failure(RuntimeError("boom"), "task-id", (), {}, None)

    fail.assert_not_called()


@pytest.mark.parametrize(("task", "module", "service", "argument"), LEASED_TASKS)
def test_a_job_still_busy_after_the_last_check_is_left_to_its_holder(
    task, module, service, argument, monkeypatch
):
    busy = engine.JobOutcome("busy", retry_in=42)
    monkeypatch.setattr(module, service, lambda **kwargs: busy)

    with mock.patch.object(task, "retry", side_effect=Retry) as retry, pytest.raises(Retry):
        task.apply(args=[7], retries=policy.BUSY_MAX_RETRIES - 1, throw=True)
    result = task.apply(args=[7], retries=policy.BUSY_MAX_RETRIES, throw=True)

    assert retry.call_args.kwargs == {"countdown": 42}
    assert result.get() == "busy"


@pytest.mark.parametrize(("task", "module", "service", "argument"), LEASED_TASKS)
def test_the_outcome_of_the_service_is_the_result_of_the_task(task, module, service, argument, monkeypatch):
    monkeypatch.setattr(module, service, lambda **kwargs: engine.JobOutcome("skipped"))

    assert task.apply(args=[7]).get() == "skipped"
