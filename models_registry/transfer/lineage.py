"""The lineage an archive carries: the dataset version, the training run, the parent version, earlier hops."""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.contrib.auth.models import AbstractBaseUser

from datasets.models import DatasetVersion
from models_registry.models import ModelVersion
from training.models import Retraining

#: Where an imported version records where it came from, inside its training_summary.
IMPORTED_FROM = "imported_from"


def username(user: AbstractBaseUser | None) -> str | None:
    return user.get_username() if user is not None else None


def when(value: dt.datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def version_lineage(version: ModelVersion) -> dict[str, Any]:
    """Where the version came from: its dataset version, training run, parent and earlier sites."""
    dataset_version = version.dataset_version
    run = version.training_run
    parent = None
    if run is not None:
        retraining = (
            Retraining.objects.filter(training_run=run).select_related("champion__registered_model").first()
        )
        if retraining is not None:
            champion = retraining.champion
            parent = {
                "model": champion.registered_model.name,
                "version": champion.version,
                "skops_sha256": champion.skops_sha256,
                "onnx_sha256": champion.onnx_sha256,
                "retraining": retraining.pk,
                "trigger": retraining.trigger,
            }
    return {
        "dataset": _dataset_lineage(dataset_version) if dataset_version is not None else None,
        "training_run": (
            {
                "id": run.pk,
                "key": str(run.key),
                "algorithm": run.algorithm,
                "params": run.params,
                "seed": run.seed,
                "test_size": run.test_size,
                "task": run.task,
                "target_column": run.target_column,
                "holdout": run.holdout,
                "mlflow_run_id": run.mlflow_run_id,
                "created_by": username(run.created_by),
                "created_at": when(run.created_at),
                "started_at": when(run.started_at),
                "finished_at": when(run.finished_at),
            }
            if run is not None
            else None
        ),
        "trained_by": username(run.created_by if run is not None else version.created_by),
        "trained_at": when(run.finished_at if run is not None and run.finished_at else version.created_at),
        "parent_version": parent,
        "imported_from": (version.training_summary or {}).get(IMPORTED_FROM),
    }


def _dataset_lineage(dataset_version: DatasetVersion) -> dict[str, Any]:
    parent = dataset_version.parent
    return {
        "name": dataset_version.dataset.name,
        "version": dataset_version.version,
        "sha256": dataset_version.sha256,
        "size_bytes": dataset_version.size_bytes,
        "row_count": dataset_version.row_count,
        "column_count": dataset_version.column_count,
        "columns": dataset_version.schema.get("columns", []),
        "target_column": dataset_version.target_column,
        "original_filename": dataset_version.original_filename,
        "lineage": dataset_version.lineage,
        "parent": {"version": parent.version, "sha256": parent.sha256} if parent is not None else None,
        "created_by": username(dataset_version.created_by),
        "created_at": when(dataset_version.created_at),
    }
