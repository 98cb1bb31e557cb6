"""The one way to MLflow: experiments, training runs, registered versions and their aliases.

Callers import this package, not its modules: `from models_registry import mlflow_gateway`. Only it and
the model directory writer it calls (mlflow_model_dir) import mlflow, and only when a function talks to
MLflow (see connection). runs logs training runs, registry registers their models and moves aliases.
"""

from __future__ import annotations

from models_registry.mlflow_gateway.errors import ModelNotFound, RegistryError, RegistryUnavailable
from models_registry.mlflow_gateway.registry import (
    alias_delete,
    alias_set,
    aliases_get,
    model_register,
    model_version_delete,
    registered_model_delete_if_empty,
)
from models_registry.mlflow_gateway.runs import (
    LoggedRun,
    experiment_ensure,
    tracking_ui_url,
    training_run_log,
)

__all__ = [
    "LoggedRun",
    "ModelNotFound",
    "RegistryError",
    "RegistryUnavailable",
    "alias_delete",
    "alias_set",
    "aliases_get",
    "experiment_ensure",
    "model_register",
    "model_version_delete",
    "registered_model_delete_if_empty",
    "tracking_ui_url",
    "training_run_log",
]
