"""Tests for `manage.py train`: queueing, waiting for the result, and refusing bad arguments."""

from __future__ import annotations

import io

import pytest
from django.core.management import CommandError, call_command

from models_registry.models import ModelVersion
from training.models import TrainingRun
from training.tests.helpers import cancer_frame, dataset_upload


def train(*args: str) -> str:
    out = io.StringIO()
    call_command("train", *args, stdout=out)
    return out.getvalue()


@pytest.fixture
def cancer(db, staff):
    dataset_upload(cancer_frame(60), name="cancer", target="diagnosis")
    return dataset_upload(cancer_frame(100), name="cancer", target="diagnosis")


BASE = ["--dataset", "cancer", "--model", "cancer", "--algorithm", "random_forest"]


@pytest.mark.django_db(transaction=True)
def test_it_trains_and_waits_for_the_registered_version(cancer, staff):
    output = train(
        *BASE, "--param", "n_estimators=5", "--param", "criterion=entropy", "--seed", "7", "--wait"
    )

    run = TrainingRun.objects.get()
    assert run.status == TrainingRun.Status.SUCCEEDED
    assert run.params == {"n_estimators": 5, "criterion": "entropy"}
    assert run.seed == 7
    assert run.dataset_version == cancer
    assert run.created_by == staff
    version = ModelVersion.objects.get(training_run=run)
    assert f"Training run {run.pk} succeeded" in output
    assert f"cancer version {version.version} (MLflow version 1)" in output
    assert "accuracy" in output


@pytest.mark.django_db(transaction=True)
def test_a_failed_run_makes_the_command_fail_with_the_reason(cancer):
    with pytest.raises(CommandError, match=r"failed: The target column 'survival' is not in the dataset"):
        train(*BASE, "--target", "survival", "--wait")

    assert TrainingRun.objects.get().status == TrainingRun.Status.FAILED


def test_without_wait_it_only_queues_the_run(cancer):
    output = train(*BASE, "--version", "1", "--target", "diagnosis", "--param", "class_weight=null")

    run = TrainingRun.objects.get()
    assert run.status == TrainingRun.Status.QUEUED
    assert run.dataset_version.version == 1
    assert run.params == {"class_weight": None}
    assert f"Queued training run {run.pk} of model cancer on cancer v1" in output


def test_waiting_gives_up_after_the_timeout_when_no_worker_takes_the_run(cancer):
    # Inside the test's transaction the on-commit hand-off to the worker never happens: the run stays queued.
    with pytest.raises(CommandError, match="still queued after 0 s; is a Celery worker running"):
        train(*BASE, "--wait", "--timeout", "0")


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--param", "n_estimators"], "must look like name=value"),
        (["--param", "a=1", "--param", "a=2"], "--param a is given twice"),
        (["--version", "9"], "has no version 9"),
        (["--algorithm", "xgboost"], "Unknown algorithm 'xgboost'"),
        (["--model", "Not Valid"], "Model name 'Not Valid' is not valid"),
        (["--user", "nobody"], "No user named 'nobody'"),
        (["--param", "n_estimators=[1"], "Hyperparameter 'n_estimators'"),
        (["--param", "depth=3"], "Unknown hyperparameter 'depth'"),
    ],
)
def test_bad_arguments_are_refused_with_the_reason(cancer, extra, message):
    with pytest.raises(CommandError, match=message):
        train(*BASE, *extra)
    assert not TrainingRun.objects.exists()


def test_an_unknown_dataset_is_refused(db):
    with pytest.raises(CommandError, match="no dataset named 'ghost'"):
        train("--dataset", "ghost", "--model", "m", "--algorithm", "ridge")
