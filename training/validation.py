"""Checks of a training run's inputs at submission, so a request the worker would refuse is never queued."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ml import catalogue
from ml.errors import TrainingInputError
from ml.train import MAX_SEED, TEST_SIZE_MAX, TEST_SIZE_MIN

if TYPE_CHECKING:
    from models_registry.models import RegisteredModel

PARAM_NAME_MAX_LENGTH = 100

Problems = dict[str, list[str]]


def _params_shape_problems(params: Any) -> list[str]:
    if not isinstance(params, dict):
        return [
            f'Hyperparameters must be a JSON object such as {{"max_depth": 3}}; got {type(params).__name__}.'
        ]
    bad = [name for name in params if not isinstance(name, str) or not 0 < len(name) <= PARAM_NAME_MAX_LENGTH]
    if bad:
        return [f"Hyperparameter names must be text of 1-{PARAM_NAME_MAX_LENGTH} characters: {bad!r}."]
    return []


def run_inputs_problems(
    *, params: Any, algorithm: Any, task: Any, seed: Any, test_size: Any, target_column: Any
) -> Problems:
    """Every problem of the run's own inputs, by field; the algorithm and its hyperparameters are checked
    against the estimator when the task is given or the algorithm serves one task only."""
    problems: Problems = {}

    def add(name: str, message: str) -> None:
        problems.setdefault(name, []).append(message)

    for message in _params_shape_problems(params):
        add("params", message)
    known = sorted({a.key for a in catalogue.algorithm_list()})
    if not isinstance(algorithm, str) or algorithm not in known:
        add("algorithm", f"Unknown algorithm {algorithm!r}. Choose one of: {', '.join(known)}.")
    if task not in (None, "", *catalogue.TASKS):
        add("task", f"Unknown task {task!r}. Choose {' or '.join(catalogue.TASKS)}, or leave it empty.")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        add("seed", f"The seed must be a whole number from 0 to {MAX_SEED}; got {seed!r}.")
    if (
        isinstance(test_size, bool)
        or not isinstance(test_size, int | float)
        or not TEST_SIZE_MIN <= test_size <= TEST_SIZE_MAX
    ):
        add(
            "test_size",
            f"The holdout fraction must be from {TEST_SIZE_MIN} to {TEST_SIZE_MAX} (for example 0.2); "
            f"got {test_size!r}.",
        )
    if target_column is not None and (not isinstance(target_column, str) or len(target_column) > 255):
        add("target_column", "The target column must be a column name of at most 255 characters.")
    if not problems.keys() & {"params", "algorithm", "task"}:
        for name, messages in hyperparameters_problems(algorithm=algorithm, task=task, params=params).items():
            problems.setdefault(name, []).extend(messages)
    return problems


def hyperparameters_problems(*, algorithm: str, task: str | None, params: dict[str, Any]) -> Problems:
    """Whether the algorithm serves the task and its estimator takes these hyperparameters.

    Without a task (inferred from the target when the run executes) the hyperparameters are checked
    for every task the algorithm serves and accepted if one of them takes them all; the worker checks
    again for the task it infers.
    """
    tasks = [task] if task else [a.task for a in catalogue.algorithm_list() if a.key == algorithm]
    refused: Problems = {}
    for candidate in tasks:
        try:
            catalogue.algorithm_get(algorithm=algorithm, task=candidate)
        except TrainingInputError as exc:
            return {"algorithm": [str(exc)]}
        try:
            catalogue.hyperparameters_validate(algorithm=algorithm, task=candidate, params=params)
        except TrainingInputError as exc:
            refused.setdefault("params", [str(exc)])
            continue
        return {}
    return refused


def model_problems(
    *,
    registered: RegisteredModel | None,
    target_column: str,
    task: str | None,
    algorithm: str,
    params: dict[str, Any],
) -> Problems:
    """Whether a run fits the model it registers under (None for a new name): the same target and task as
    its versions."""
    if registered is None:
        return {}
    if registered.target_column and registered.target_column != target_column:
        return {
            "target_column": [
                f"Model {registered.name!r} predicts {registered.target_column!r}; a run predicting "
                f"{target_column!r} must use another model name."
            ]
        }
    if task and registered.task and registered.task != task:
        return {
            "task": [
                f"Model {registered.name!r} is a {registered.task} model; "
                f"a {task} run must use another model name."
            ]
        }
    if not task and registered.task:
        # The run's task will be inferred, and must then be the model's for the run to succeed.
        return hyperparameters_problems(algorithm=algorithm, task=registered.task, params=params)
    return {}
