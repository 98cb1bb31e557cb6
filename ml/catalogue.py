"""The algorithm catalogue, task inference from the target, and hyperparameter validation.

The catalogue names each estimator class by its import path: the forms and serializers that list the
algorithms are imported by every process, which then starts without scikit-learn; the class is imported
when a hyperparameter is checked or an estimator built.
"""

from __future__ import annotations

import importlib
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from sklearn.base import BaseEstimator

from ml.errors import TrainingInputError

CLASSIFICATION = "classification"
REGRESSION = "regression"
TASKS = (CLASSIFICATION, REGRESSION)

# A numeric target with at most this many distinct whole-number values is read as class labels.
CLASSIFICATION_MAX_INTEGER_CLASSES = 20

# Set by the training service, never by the person: random_state comes from the run's seed so the run
# can be repeated; n_jobs stays at one process so one training cannot take over the worker; verbose and
# warm_start only make sense in an interactive session.
RESERVED_PARAMS = {
    "random_state": "it is set from the run's seed; choose the seed instead",
    "n_jobs": "training uses one process per run",
    "verbose": "training output is not shown",
    "warm_start": "every run trains from scratch",
}


@dataclass(frozen=True)
class Algorithm:
    key: str
    task: str
    label: str
    # "module:Class", imported on first use (estimator_class).
    estimator_path: str
    defaults: dict[str, Any] = field(default_factory=dict)
    # Linear models need standardised inputs; trees do not, and skipping the scaler keeps the ONNX
    # float32 tree thresholds seeing exactly the values scikit-learn sees.
    scale_numeric: bool = False
    # Estimators that take random_state get the run's seed.
    seeded: bool = True

    @property
    def estimator_class(self) -> type[BaseEstimator]:
        module, _, name = self.estimator_path.partition(":")
        return getattr(importlib.import_module(module), name)


CATALOGUE: dict[tuple[str, str], Algorithm] = {
    (algorithm.task, algorithm.key): algorithm
    for algorithm in (
        Algorithm(
            key="logistic_regression",
            task=CLASSIFICATION,
            label="Logistic regression",
            estimator_path="sklearn.linear_model:LogisticRegression",
            defaults={"max_iter": 1000},
            scale_numeric=True,
        ),
        Algorithm(
            key="random_forest",
            task=CLASSIFICATION,
            label="Random forest",
            estimator_path="sklearn.ensemble:RandomForestClassifier",
        ),
        Algorithm(
            key="hist_gradient_boosting",
            task=CLASSIFICATION,
            label="Histogram gradient boosting",
            estimator_path="sklearn.ensemble:HistGradientBoostingClassifier",
        ),
        Algorithm(
            key="ridge",
            task=REGRESSION,
            label="Ridge regression",
            estimator_path="sklearn.linear_model:Ridge",
            scale_numeric=True,
        ),
        Algorithm(
            key="random_forest",
            task=REGRESSION,
            label="Random forest",
            estimator_path="sklearn.ensemble:RandomForestRegressor",
        ),
        Algorithm(
            key="hist_gradient_boosting",
            task=REGRESSION,
            label="Histogram gradient boosting",
            estimator_path="sklearn.ensemble:HistGradientBoostingRegressor",
        ),
    )
}


def algorithm_list(*, task: str | None = None) -> list[Algorithm]:
    return [a for a in CATALOGUE.values() if task is None or a.task == task]


def algorithm_get(*, algorithm: str, task: str) -> Algorithm:
    if task not in TASKS:
        raise TrainingInputError(f"Unknown task '{task}'. Choose one of: {', '.join(TASKS)}.")
    found = CATALOGUE.get((task, algorithm))
    if found is None:
        allowed = ", ".join(a.key for a in algorithm_list(task=task))
        other = [a.task for a in CATALOGUE.values() if a.key == algorithm]
        hint = f" '{algorithm}' exists only for {other[0]}." if other else ""
        raise TrainingInputError(
            f"Unknown algorithm '{algorithm}' for {task}.{hint} Choose one of: {allowed}."
        )
    return found


def task_infer(target: pd.Series) -> str:
    """Guess the task from the target values (missing values ignored).

    - booleans, text and other non-numeric values: classification;
    - numbers that are all whole and take at most 20 distinct values: classification (labels coded 0/1/2…);
    - any other numbers: regression.
    The caller may override the guess.
    """
    values = target.dropna()
    if pd.api.types.is_bool_dtype(values) or not pd.api.types.is_numeric_dtype(values):
        return CLASSIFICATION
    numbers = values.to_numpy(dtype=float)
    numbers = numbers[np.isfinite(numbers)]
    whole = numbers.size > 0 and bool(np.all(numbers == np.round(numbers)))
    if whole and np.unique(numbers).size <= CLASSIFICATION_MAX_INTEGER_CLASSES:
        return CLASSIFICATION
    return REGRESSION


def _is_json_value(value: Any) -> bool:
    if value is None or isinstance(value, bool | int | str):
        return True
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, list):
        return all(_is_json_value(item) for item in value)
    if isinstance(value, dict):
        return all(isinstance(key, str) and _is_json_value(item) for key, item in value.items())
    return False


def _accepts_boolean(estimator_class: type[BaseEstimator], name: str) -> bool:
    constraints = getattr(estimator_class, "_parameter_constraints", {}).get(name, [])
    return any(constraint == "boolean" or constraint is bool for constraint in constraints)


def hyperparameters_validate(*, algorithm: str, task: str, params: dict[str, Any] | None) -> dict[str, Any]:
    """Check hyperparameters against the estimator's own constraints and return the full set.

    Values must already have their JSON types: the string "100" is refused for an integer parameter
    rather than converted, so the value recorded is always the value used. Booleans are refused where
    the estimator does not take a boolean (Python would otherwise accept True as the integer 1).
    The returned dict holds every constructor parameter (catalogue defaults, then the given values),
    without random_state, which is the run's seed.
    """
    from sklearn.utils._param_validation import InvalidParameterError

    spec = algorithm_get(algorithm=algorithm, task=task)
    params = {} if params is None else params
    if not isinstance(params, dict):
        raise TrainingInputError("Hyperparameters must be a mapping of names to values.")
    allowed = sorted(
        name for name in spec.estimator_class().get_params(deep=False) if name not in RESERVED_PARAMS
    )
    problems: list[str] = []
    for name in params:
        if not isinstance(name, str):
            problems.append(f"Hyperparameter names must be text, got {name!r}.")
        elif name in RESERVED_PARAMS:
            problems.append(f"'{name}' cannot be set: {RESERVED_PARAMS[name]}.")
        elif name not in allowed:
            problems.append(
                f"Unknown hyperparameter '{name}' for {spec.label} ({task}). Allowed: {', '.join(allowed)}."
            )
    if problems:
        raise TrainingInputError(" ".join(problems))
    for name, value in params.items():
        if not _is_json_value(value):
            problems.append(
                f"Hyperparameter '{name}' must be a number, text, true/false, null, a list or a mapping; "
                f"got {value!r}."
            )
        elif isinstance(value, bool) and not _accepts_boolean(spec.estimator_class, name):
            problems.append(f"Hyperparameter '{name}' does not take true/false; got {value!r}.")
        else:
            # One parameter at a time so every wrong value is reported, not just the first.
            estimator = spec.estimator_class(**spec.defaults)
            estimator.set_params(**{name: value})
            try:
                estimator._validate_params()
            except InvalidParameterError as exc:
                problems.append(f"Hyperparameter '{name}': {exc}")
    if problems:
        raise TrainingInputError(" ".join(problems))
    estimator = spec.estimator_class(**{**spec.defaults, **params})
    try:
        estimator._validate_params()
    except InvalidParameterError as exc:
        raise TrainingInputError(f"Hyperparameters rejected: {exc}") from exc
    full = estimator.get_params(deep=False)
    full.pop("random_state", None)
    return full


def estimator_build(*, algorithm: str, task: str, params: dict[str, Any] | None, seed: int) -> BaseEstimator:
    """An unfitted estimator with validated hyperparameters and the seed wired in."""
    spec = algorithm_get(algorithm=algorithm, task=task)
    full = hyperparameters_validate(algorithm=algorithm, task=task, params=params)
    estimator = spec.estimator_class(**full)
    if spec.seeded and "random_state" in estimator.get_params(deep=False):
        estimator.set_params(random_state=seed)
    return estimator
