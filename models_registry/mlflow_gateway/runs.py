"""Training runs in MLflow: the experiment, one run logged with its model, and the run's link in the UI."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import tempfile
import time
import urllib.parse
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from django.conf import settings

from models_registry import mlflow_model_dir
from models_registry.mlflow_gateway import connection

if TYPE_CHECKING:
    import mlflow
    from mlflow.entities import LoggedModel, Metric, Param, RunTag

logger = logging.getLogger(__name__)

RUN_KEY_TAG = "mlops.training_run"
MODEL_ID_TAG = "mlops.model_id"
MODEL_ARTIFACT_NAME = "model"


@dataclasses.dataclass(frozen=True)
class LoggedRun:
    """A training run in MLflow; the model's id and location when this call logged it, for model_register."""

    run_id: str
    model_id: str | None = None
    model_source: str | None = None


def _without_credentials(uri: str) -> str:
    parts = urllib.parse.urlsplit(uri)
    netloc = parts.hostname or ""
    if parts.port:
        netloc = f"{netloc}:{parts.port}"
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))


def tracking_ui_url(*, run_id: str) -> str | None:
    """A link to the run in the MLflow UI: MLFLOW_UI_URL's, else the tracking server's; None for a local
    store without a configured UI."""
    if settings.MLFLOW_UI_URL:
        return f"{settings.MLFLOW_UI_URL}/#/runs/{urllib.parse.quote(run_id)}"
    uri = connection.tracking_uri()
    if not connection.is_server(uri):
        return None
    return f"{_without_credentials(uri)}/#/runs/{urllib.parse.quote(run_id)}"


def experiment_ensure(*, name: str | None = None) -> str:
    """Return the id of the experiment, creating (or restoring) it on first use."""
    from mlflow.exceptions import MlflowException

    name = name or settings.MLFLOW_EXPERIMENT_NAME
    client = connection.client()
    with connection.translated(f"lookup of experiment {name!r}"):
        experiment = client.get_experiment_by_name(name)
        if experiment is not None:
            if experiment.lifecycle_stage == "deleted":
                client.restore_experiment(experiment.experiment_id)
            return experiment.experiment_id
        # A server chooses where artifacts go; only a local store needs to be told.
        location = None if connection.is_server(connection.tracking_uri()) else settings.MLFLOW_ARTIFACT_ROOT
        try:
            return client.create_experiment(name, artifact_location=location)
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
            # Another process created it between our lookup and our create.
            return client.get_experiment_by_name(name).experiment_id


def training_run_log(
    *,
    run_key: str,
    params: Mapping[str, Any],
    metrics: Mapping[str, float],
    tags: Mapping[str, Any],
    artifacts: Mapping[str, bytes | str],
    model: Any = None,
    skops_trusted_types: Sequence[str] = (),
    input_example: Any = None,
    output_example: Any = None,
    pip_requirements: Sequence[str] | None = None,
    run_name: str | None = None,
    model_skops: bytes | None = None,
) -> LoggedRun:
    """Log one training run with its model to MLflow.

    Idempotent on `run_key` (our TrainingRun id): a FINISHED run with that key is returned as it is,
    and an unfinished one left by a crash is deleted before a new run is logged. The run is marked
    FINISHED only after everything was logged, so FINISHED means complete. The caller must hold the
    claim on the TrainingRun: two concurrent calls with one key would both log a run.

    `artifacts` maps relative file names to contents (str is written as UTF-8). The model is stored
    with the sklearn flavor in skops format, never pickle; `input_example` is cut to a few rows.
    `model_skops`, the model already dumped with skops.io, is stored as the flavor's file instead of
    MLflow dumping the model again and loading it back (seconds for a large forest). `output_example`,
    the model's predictions for the rows of `input_example` when the caller has them, gives the
    signature's outputs without MLflow predicting the example again.
    """
    from mlflow.entities import RunTag

    _validate_run_key(run_key)
    files = _artifact_files(artifacts)
    rows = _run_rows(params=params, metrics=metrics, tags=tags)
    client = connection.client()
    experiment_id = experiment_ensure()
    with connection.translated(f"lookup of training run {run_key!r}"):
        finished = _runs_clean_up(client, experiment_id=experiment_id, run_key=run_key)
    if finished is not None:
        logger.info("training run %s already logged to MLflow as %s", run_key, finished)
        return LoggedRun(run_id=finished)

    with connection.translated(f"logging of training run {run_key!r}"):
        run = client.create_run(experiment_id, tags={RUN_KEY_TAG: run_key}, run_name=run_name)
    run_id = run.info.run_id
    try:
        with connection.translated(f"logging of training run {run_key!r}"):
            logged = None
            if model is not None:
                # Created before the run's data so that one batch also records the model's id.
                logged = client.create_logged_model(
                    experiment_id, name=MODEL_ARTIFACT_NAME, source_run_id=run_id
                )
                param_rows, metric_rows, tag_rows = rows
                rows = (param_rows, metric_rows, [*tag_rows, RunTag(MODEL_ID_TAG, logged.model_id)])
            _run_data_log(client, run_id=run_id, rows=rows)
            if files:
                _artifacts_log(client, run_id=run_id, files=files)
            if logged is not None:
                _model_log(
                    client,
                    logged=logged,
                    run_id=run_id,
                    model=model,
                    skops_trusted_types=skops_trusted_types,
                    input_example=input_example,
                    output_example=output_example,
                    pip_requirements=pip_requirements,
                    model_skops=model_skops,
                )
            client.set_terminated(run_id, "FINISHED")
    except BaseException:
        # Leave the run FAILED so a retry recognises it as a leftover and replaces it.
        with contextlib.suppress(Exception):
            client.set_terminated(run_id, "FAILED")
        raise
    logger.info("training run %s logged to MLflow as %s", run_key, run_id)
    if logged is None:
        return LoggedRun(run_id=run_id)
    return LoggedRun(run_id=run_id, model_id=logged.model_id, model_source=logged.artifact_location)


def _validate_run_key(run_key: str) -> None:
    if not run_key or len(run_key) > 250 or not all(c.isalnum() or c in "-_.:" for c in run_key):
        raise ValueError(f"run_key {run_key!r} must be 1-250 letters, digits, '-', '_', '.' or ':'")


def _artifact_files(artifacts: Mapping[str, bytes | str]) -> dict[PurePosixPath, bytes]:
    files: dict[PurePosixPath, bytes] = {}
    for name, content in artifacts.items():
        path = PurePosixPath(name)
        escapes = path.is_absolute() or ".." in path.parts or not path.parts
        if not name or "\\" in name or name.endswith("/") or escapes:
            raise ValueError(f"artifact name {name!r} must be a relative file path without '..'")
        if isinstance(content, str):
            content = content.encode("utf-8")
        if not isinstance(content, bytes):
            raise TypeError(f"artifact {name!r} must be bytes or str, not {type(content).__name__}")
        files[path] = content
    return files


def _runs_clean_up(client: mlflow.MlflowClient, *, experiment_id: str, run_key: str) -> str | None:
    """Return the FINISHED run for the key; delete every unfinished run a crash left behind."""
    from mlflow.entities import ViewType
    from mlflow.exceptions import MlflowException

    runs = client.search_runs(
        [experiment_id],
        filter_string=f"tags.`{RUN_KEY_TAG}` = {connection.quoted(run_key)}",
        run_view_type=ViewType.ACTIVE_ONLY,
        order_by=["attributes.start_time ASC"],
    )
    for run in runs:
        if run.info.status == "FINISHED":
            return run.info.run_id
    for run in runs:
        logger.warning("deleting unfinished MLflow run %s of training run %s", run.info.run_id, run_key)
        if run.info.status == "RUNNING":
            client.set_terminated(run.info.run_id, "FAILED")
        model_id = run.data.tags.get(MODEL_ID_TAG)
        if model_id:
            with contextlib.suppress(MlflowException):
                client.delete_logged_model(model_id)
        client.delete_run(run.info.run_id)
    return None


def _run_rows(
    *, params: Mapping[str, Any], metrics: Mapping[str, float], tags: Mapping[str, Any]
) -> tuple[list[Param], list[Metric], list[RunTag]]:
    from mlflow.entities import Metric, Param, RunTag

    now = int(time.time() * 1000)
    metric_rows = []
    for key, value in metrics.items():
        try:
            metric_rows.append(Metric(key, float(value), now, 0))
        except (TypeError, ValueError):
            raise ValueError(f"metric {key!r} must be a number, not {value!r}") from None
    param_rows = [Param(key, str(value)) for key, value in params.items()]
    if reserved := {RUN_KEY_TAG, MODEL_ID_TAG} & set(tags):
        raise ValueError(f"tags {sorted(reserved)} are set by the gateway itself")
    tag_rows = [RunTag(key, str(value)) for key, value in tags.items()]
    return param_rows, metric_rows, tag_rows


def _run_data_log(
    client: mlflow.MlflowClient,
    *,
    run_id: str,
    rows: tuple[list[Param], list[Metric], list[RunTag]],
) -> None:
    param_rows, metric_rows, tag_rows = rows
    # As few batches as MLflow's limits allow (1000 entries, of which at most 100 params and 100 tags):
    # each batch is one transaction, or one request to a server.
    while param_rows or metric_rows or tag_rows:
        params, param_rows = param_rows[:100], param_rows[100:]
        tags, tag_rows = tag_rows[:100], tag_rows[100:]
        room = 1000 - len(params) - len(tags)
        metrics, metric_rows = metric_rows[:room], metric_rows[room:]
        client.log_batch(run_id, metrics=metrics, params=params, tags=tags, synchronous=True)


def _artifacts_log(client: mlflow.MlflowClient, *, run_id: str, files: Mapping[PurePosixPath, bytes]) -> None:
    with tempfile.TemporaryDirectory(prefix="mlflow-artifacts-") as folder:
        for path, content in files.items():
            target = Path(folder, *path.parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(content)
        client.log_artifacts(run_id, folder)


def _model_log(
    client: mlflow.MlflowClient,
    *,
    logged: LoggedModel,
    run_id: str,
    model: Any,
    skops_trusted_types: Sequence[str],
    input_example: Any,
    pip_requirements: Sequence[str] | None,
    model_skops: bytes | None = None,
    output_example: Any = None,
) -> None:
    # These client calls and create_logged_model replace mlflow.sklearn.log_model, which reads the
    # global tracking URI.
    from mlflow.entities import LoggedModelOutput
    from mlflow.models import Model

    with tempfile.TemporaryDirectory(prefix="mlflow-model-") as folder:
        local_path = os.path.join(folder, MODEL_ARTIFACT_NAME)
        mlflow_model_dir.model_dir_write(
            local_path,
            model=model,
            mlflow_model=Model(
                artifact_path=logged.artifact_location,
                model_uuid=logged.model_id,
                run_id=run_id,
                model_id=logged.model_id,
            ),
            skops_trusted_types=skops_trusted_types,
            input_example=input_example,
            output_example=output_example,
            pip_requirements=pip_requirements,
            model_skops=model_skops,
        )
        client.log_model_artifacts(logged.model_id, local_path)
    client.log_outputs(run_id, [LoggedModelOutput(logged.model_id, step=0)])
    client.finalize_logged_model(logged.model_id, "READY")
