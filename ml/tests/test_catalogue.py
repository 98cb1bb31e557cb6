"""Tests for the algorithm catalogue, task inference and hyperparameter validation."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from ml import catalogue
from ml.errors import TrainingInputError


def test_the_catalogue_offers_the_algorithms_the_issue_asks_for():
    keys = {(a.task, a.key) for a in catalogue.algorithm_list()}
    assert {
        ("classification", "logistic_regression"),
        ("classification", "random_forest"),
        ("classification", "hist_gradient_boosting"),
        ("regression", "ridge"),
        ("regression", "random_forest"),
        ("regression", "hist_gradient_boosting"),
    } <= keys


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (["yes", "no", "yes", None], "classification"),
        ([True, False, True], "classification"),
        ([0, 1, 1, 0, np.nan], "classification"),
        ([1.0, 2.0, 3.0, 2.0], "classification"),
        (list(range(21)), "regression"),
        ([0.5, 1.2, 3.3], "regression"),
    ],
)
def test_it_infers_the_task_from_the_target(values, expected):
    assert catalogue.task_infer(pd.Series(values)) == expected


def test_it_reads_at_most_twenty_whole_numbers_as_classes():
    assert catalogue.task_infer(pd.Series(list(range(20)) * 2)) == "classification"
    assert catalogue.task_infer(pd.Series(list(range(21)) * 2)) == "regression"


def test_it_returns_every_parameter_with_the_given_values_applied():
    params = catalogue.hyperparameters_validate(
        algorithm="random_forest", task="classification", params={"n_estimators": 25, "max_depth": 4}
    )
    assert params["n_estimators"] == 25
    assert params["max_depth"] == 4
    assert params["criterion"] == "gini"
    assert "random_state" not in params
    json.dumps(params)


def test_it_applies_catalogue_defaults():
    params = catalogue.hyperparameters_validate(
        algorithm="logistic_regression", task="classification", params={}
    )
    assert params["max_iter"] == 1000


def test_it_names_an_unknown_hyperparameter_and_lists_the_allowed_ones():
    with pytest.raises(TrainingInputError) as caught:
        catalogue.hyperparameters_validate(algorithm="ridge", task="regression", params={"alpah": 1.0})
    message = str(caught.value)
    assert "Unknown hyperparameter 'alpah'" in message
    assert "alpha" in message
    assert "fit_intercept" in message


def test_it_rejects_a_number_given_as_text_rather_than_converting_it():
    with pytest.raises(TrainingInputError) as caught:
        catalogue.hyperparameters_validate(
            algorithm="random_forest", task="classification", params={"n_estimators": "100"}
        )
    assert "'n_estimators'" in str(caught.value)
    assert "must be an int" in str(caught.value)


def test_it_rejects_a_float_for_an_integer_parameter():
    with pytest.raises(TrainingInputError, match="n_estimators"):
        catalogue.hyperparameters_validate(
            algorithm="random_forest", task="regression", params={"n_estimators": 10.5}
        )


def test_it_rejects_true_for_an_integer_parameter():
    with pytest.raises(TrainingInputError, match="'max_iter' does not take true/false"):
        catalogue.hyperparameters_validate(
            algorithm="hist_gradient_boosting", task="classification", params={"max_iter": True}
        )


def test_it_accepts_a_boolean_where_the_estimator_takes_one():
    params = catalogue.hyperparameters_validate(
        algorithm="hist_gradient_boosting", task="regression", params={"early_stopping": False}
    )
    assert params["early_stopping"] is False


def test_it_rejects_a_value_out_of_range():
    with pytest.raises(TrainingInputError, match="'C'"):
        catalogue.hyperparameters_validate(
            algorithm="logistic_regression", task="classification", params={"C": -1}
        )


def test_it_reports_every_wrong_value_at_once():
    with pytest.raises(TrainingInputError) as caught:
        catalogue.hyperparameters_validate(
            algorithm="random_forest", task="classification", params={"n_estimators": 0, "max_depth": "deep"}
        )
    assert "'n_estimators'" in str(caught.value)
    assert "'max_depth'" in str(caught.value)


def test_it_refuses_the_seed_and_process_parameters():
    with pytest.raises(
        TrainingInputError, match="'random_state' cannot be set: it is set from the run's seed"
    ):
        catalogue.hyperparameters_validate(algorithm="ridge", task="regression", params={"random_state": 1})
    with pytest.raises(TrainingInputError, match="'n_jobs' cannot be set"):
        catalogue.hyperparameters_validate(algorithm="random_forest", task="regression", params={"n_jobs": 4})


def test_it_refuses_values_that_are_not_json():
    with pytest.raises(TrainingInputError, match="must be a number, text"):
        catalogue.hyperparameters_validate(algorithm="ridge", task="regression", params={"alpha": object()})


def test_it_refuses_params_that_are_not_a_mapping():
    with pytest.raises(TrainingInputError, match="mapping"):
        catalogue.hyperparameters_validate(algorithm="ridge", task="regression", params=["alpha", 1])


def test_it_names_the_algorithms_of_the_task_for_an_unknown_algorithm():
    with pytest.raises(TrainingInputError) as caught:
        catalogue.algorithm_get(algorithm="svm", task="classification")
    assert "Unknown algorithm 'svm'" in str(caught.value)
    assert "logistic_regression" in str(caught.value)


def test_it_says_when_an_algorithm_belongs_to_the_other_task():
    with pytest.raises(TrainingInputError, match="'ridge' exists only for regression"):
        catalogue.algorithm_get(algorithm="ridge", task="classification")


def test_it_wires_the_seed_into_the_estimator():
    estimator = catalogue.estimator_build(algorithm="random_forest", task="regression", params={}, seed=7)
    assert estimator.get_params()["random_state"] == 7
