"""Tests of the checks training_run_create makes before it stores or queues a run."""

from __future__ import annotations

from unittest import mock

import pytest
from django.core.exceptions import ValidationError

from ml.train import TEST_SIZE_MAX, TEST_SIZE_MIN
from models_registry.models import RegisteredModel
from training import services as training_services
from training import tasks
from training.models import TrainingRun
from training.tests.helpers import cancer_frame, dataset_upload

pytestmark = pytest.mark.django_db


@pytest.fixture
def cancer():
    return dataset_upload(cancer_frame(60), name="cancer", target="diagnosis")


@pytest.fixture
def sent():
    with mock.patch.object(tasks.training_run_execute_task, "delay") as delay:
        yield delay


def refusal(cancer, sent, **overrides) -> dict[str, list[str]]:
    """The refusal of a submission, by field, after checking that nothing was stored or queued."""
    arguments = {
        "dataset_version": cancer,
        "model_name": "cancer",
        "algorithm": "random_forest",
        "params": {},
        "created_by": None,
        **overrides,
    }
    models_before = list(RegisteredModel.objects.values_list("pk", flat=True))
    with pytest.raises(ValidationError) as caught:
        training_services.training_run_create(**arguments)
    assert not TrainingRun.objects.exists()
    assert list(RegisteredModel.objects.values_list("pk", flat=True)) == models_before
    sent.assert_not_called()
    return caught.value.message_dict


def test_an_unknown_hyperparameter_is_refused_naming_the_params_field(cancer, sent):
    problems = refusal(cancer, sent, params={"learning_rate": 0.1})

    assert list(problems) == ["params"]
    assert "Unknown hyperparameter 'learning_rate' for Random forest" in problems["params"][0]
    assert "Allowed:" in problems["params"][0]


def test_a_hyperparameter_value_the_estimator_refuses_is_refused(cancer, sent):
    problems = refusal(cancer, sent, algorithm="hist_gradient_boosting", params={"max_iter": "many"})

    assert list(problems) == ["params"]
    assert "Hyperparameter 'max_iter'" in problems["params"][0]


def test_a_boolean_where_the_estimator_takes_a_number_is_refused(cancer, sent):
    problems = refusal(cancer, sent, params={"n_estimators": True})

    assert problems["params"] == ["Hyperparameter 'n_estimators' does not take true/false; got True."]


def test_a_hyperparameter_the_service_sets_itself_is_refused(cancer, sent):
    problems = refusal(cancer, sent, params={"random_state": 3})

    assert "'random_state' cannot be set" in problems["params"][0]


def test_a_classification_algorithm_for_a_regression_run_is_refused(cancer, sent):
    problems = refusal(cancer, sent, algorithm="logistic_regression", task="regression")

    assert list(problems) == ["algorithm"]
    assert "Unknown algorithm 'logistic_regression' for regression" in problems["algorithm"][0]
    assert "exists only for classification" in problems["algorithm"][0]


def test_a_regression_value_for_a_classification_run_is_refused(cancer, sent):
    problems = refusal(cancer, sent, task="classification", params={"criterion": "squared_error"})

    assert "Hyperparameter 'criterion'" in problems["params"][0]


@pytest.mark.parametrize("test_size", [0.9, 0.01, 0.0, 1.0, float("nan"), "0.2", True])
def test_a_holdout_share_outside_the_limits_is_refused(cancer, sent, test_size):
    problems = refusal(cancer, sent, test_size=test_size)

    assert list(problems) == ["test_size"]
    assert problems["test_size"][0].startswith(
        f"The holdout fraction must be from {TEST_SIZE_MIN} to {TEST_SIZE_MAX}"
    )


@pytest.mark.parametrize("test_size", [TEST_SIZE_MIN, 0.2, TEST_SIZE_MAX])
def test_a_holdout_share_within_the_limits_is_accepted(cancer, sent, test_size):
    run = training_services.training_run_create(
        dataset_version=cancer,
        model_name="cancer",
        algorithm="random_forest",
        params={},
        created_by=None,
        test_size=test_size,
    )

    assert run.test_size == test_size


@pytest.mark.parametrize("seed", [-1, 2**32, 1.5, "7", None])
def test_a_seed_out_of_range_is_refused(cancer, sent, seed):
    assert list(refusal(cancer, sent, seed=seed)) == ["seed"]


def test_every_problem_is_reported_at_once_by_field(cancer, sent):
    problems = refusal(cancer, sent, algorithm="xgboost", task="clustering", seed=-1, test_size=0.9)

    assert sorted(problems) == ["algorithm", "seed", "task", "test_size"]


def test_without_a_task_hyperparameters_of_either_task_are_accepted(cancer, sent):
    run = training_services.training_run_create(
        dataset_version=cancer,
        model_name="cancer",
        algorithm="random_forest",
        params={"criterion": "gini", "max_depth": 3},
        created_by=None,
    )

    assert run.params == {"criterion": "gini", "max_depth": 3}
    sent.assert_not_called()  # only once the transaction commits


def test_without_a_task_a_value_no_task_takes_is_refused(cancer, sent):
    problems = refusal(cancer, sent, params={"criterion": "bogus"})

    assert "Hyperparameter 'criterion'" in problems["params"][0]


def test_without_a_task_the_registered_models_task_decides(cancer, sent):
    RegisteredModel.objects.create(name="cancer", task="regression", target_column="diagnosis")

    problems = refusal(cancer, sent, algorithm="logistic_regression")

    assert "Unknown algorithm 'logistic_regression' for regression" in problems["algorithm"][0]


def test_a_task_that_contradicts_the_registered_model_is_refused_naming_the_task(cancer, sent):
    RegisteredModel.objects.create(name="cancer", task="regression", target_column="diagnosis")

    problems = refusal(cancer, sent, task="classification")

    assert problems == {
        "task": ["Model 'cancer' is a regression model; a classification run must use another model name."]
    }


def test_a_missing_dataset_version_is_refused_naming_the_field(cancer, sent):
    assert refusal(cancer, sent, dataset_version=999_999) == {
        "dataset_version": ["Dataset version 999999 does not exist."]
    }


def test_an_accepted_run_is_queued_once_the_transaction_commits(
    cancer, sent, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        run = training_services.training_run_create(
            dataset_version=cancer,
            model_name="cancer",
            algorithm="hist_gradient_boosting",
            params={"max_iter": 20, "learning_rate": 0.2},
            created_by=None,
            task="classification",
            seed=7,
            test_size=0.25,
        )

    sent.assert_called_once_with(run.pk)
    assert (run.status, run.task, run.seed, run.test_size) == ("queued", "classification", 7, 0.25)
