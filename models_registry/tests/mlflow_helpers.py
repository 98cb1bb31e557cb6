"""Reading what the gateway wrote straight from MLflow: tests check the store; the app never reads it back."""

from __future__ import annotations

import tempfile
from pathlib import Path
from types import SimpleNamespace

import mlflow
import skops.io
from django.conf import settings

from models_registry import mlflow_gateway


def client() -> mlflow.MlflowClient:
    return mlflow.MlflowClient(
        tracking_uri=settings.MLFLOW_TRACKING_URI, registry_uri=settings.MLFLOW_TRACKING_URI
    )


def run_read(run_id: str) -> SimpleNamespace:
    """A run's status, params, metrics, tags, artifact location and logged model id."""
    run = client().get_run(run_id)
    return SimpleNamespace(
        run_id=run.info.run_id,
        experiment_id=run.info.experiment_id,
        status=run.info.status,
        params=dict(run.data.params),
        metrics=dict(run.data.metrics),
        tags=dict(run.data.tags),
        artifact_uri=run.info.artifact_uri,
        model_id=run.data.tags.get(mlflow_gateway.runs.MODEL_ID_TAG),
    )


def registered_model_read(*, name: str, version: int, trusted: list[str] | None = None) -> object:
    """The estimator MLflow's registry serves for a version, loaded from its skops file (never a pickle)."""
    source = client().get_model_version_download_uri(name, str(version))
    folder = Path(tempfile.mkdtemp(prefix="mlflow-read-"))
    local = Path(
        mlflow.artifacts.download_artifacts(
            artifact_uri=source, dst_path=str(folder), tracking_uri=settings.MLFLOW_TRACKING_URI
        )
    )
    model_file = local / "model.skops"
    assert model_file.is_file(), f"no skops file in {sorted(p.name for p in local.iterdir())}"
    untrusted = skops.io.get_untrusted_types(file=model_file)
    allowed = [t for t in untrusted if t.startswith(("sklearn.", "numpy.", "scipy."))] + list(trusted or [])
    return skops.io.load(model_file, trusted=allowed)
