"""The one way to MLflow: experiments, training runs, registered versions and their aliases.

Only this module and the model directory writer it calls (mlflow_model_dir) import mlflow, and only when
a function talks to MLflow: importing it costs about a second of CPU, which every web worker, Celery
worker and manage.py command would otherwise pay at start (the admin imports this module with the views).
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import functools
import logging
import os
import tempfile
import time
import urllib.parse
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

# MLflow 3 phones home from a background thread unless told not to; this app is self-hosted and offline.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
# MLflow's own defaults (7 retries with back-off, 120 s timeout) hold a request for minutes when the
# tracking server is down; the operator may still override both.
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "3")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")

from django.conf import settings

from models_registry import mlflow_model_dir

if TYPE_CHECKING:
    import mlflow
    from mlflow.entities import LoggedModel, Metric, Param, RunTag
    from mlflow.exceptions import MlflowException

logger = logging.getLogger(__name__)

RUN_KEY_TAG = "mlops.training_run"
MODEL_ID_TAG = "mlops.model_id"
MODEL_ARTIFACT_NAME = "model"

_NOT_FOUND_CODES = {"RESOURCE_DOES_NOT_EXIST", "NOT_FOUND"}
# Refusals that a retry cannot fix; every other MLflow error (5xx, connection, timeouts) is transient.
_REFUSED_CODES = {
    "INVALID_PARAMETER_VALUE",
    "BAD_REQUEST",
    "MALFORMED_REQUEST",
    "INVALID_STATE",
    "RESOURCE_ALREADY_EXISTS",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "UNAUTHENTICATED",
    "CUSTOMER_UNAUTHORIZED",
    "RESOURCE_LIMIT_EXCEEDED",
}


@dataclasses.dataclass(frozen=True)
class LoggedRun:
    """A training run in MLflow; the model's id and location when this call logged it, for model_register."""

    run_id: str
    model_id: str | None = None
    model_source: str | None = None


class RegistryError(Exception):
    """MLflow refused the request; retrying the same request will not help."""


class RegistryUnavailable(RegistryError):
    """The tracking store or registry could not be reached or failed; retrying later may help."""


class ModelNotFound(RegistryError):
    """The registered model, model version or run does not exist."""


def _tracking_uri() -> str:
    return settings.MLFLOW_TRACKING_URI


def _is_server(uri: str) -> bool:
    return urllib.parse.urlparse(uri).scheme in ("http", "https")


@functools.lru_cache(maxsize=16)
def _client_for(uri: str) -> mlflow.MlflowClient:
    # An explicit client per URI: the fluent API's global tracking URI would leak between threads and tests.
    import mlflow

    database = _local_database(uri)
    if database is None:
        return mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    # MLflow creates a local store's schema when it first opens it, with no lock of its own: two workers
    # starting their first training runs together on a fresh install both ran the migrations and one
    # failed with "duplicate column name". A file lock makes the second wait, then find the tables.
    database.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{database}.init-lock", "a+b") as lock, _translated("opening of the tracking store"):
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
            client.search_registered_models(max_results=1)  # the registry's store opens lazily
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return client


def _local_database(uri: str) -> Path | None:
    """The file of a local SQLite store (sqlite:///relative or sqlite:////absolute), else None."""
    location = uri.removeprefix("sqlite:///").split("?", 1)[0] if uri.startswith("sqlite:///") else ""
    return Path(location) if location and location != ":memory:" else None


def _client() -> mlflow.MlflowClient:
    return _client_for(_tracking_uri())


def _error_for(exc: MlflowException, action: str) -> RegistryError:
    code = exc.error_code
    message = f"MLflow {action} failed: {exc.message}"
    if code in _NOT_FOUND_CODES:
        return ModelNotFound(message)
    if code in _REFUSED_CODES:
        return RegistryError(message)
    return RegistryUnavailable(message)


@contextlib.contextmanager
def _translated(action: str) -> Iterator[None]:
    import requests
    import sqlalchemy.exc
    from mlflow.exceptions import MlflowException

    try:
        yield
    except RegistryError:
        raise
    except MlflowException as exc:
        raise _error_for(exc, action) from exc
    except (requests.RequestException, sqlalchemy.exc.SQLAlchemyError, OSError) as exc:
        raise RegistryUnavailable(f"MLflow {action} failed: {exc}") from exc


def _quoted(value: str) -> str:
    """Quote a value for an MLflow search filter, which has no escape for a single quote."""
    if "'" in value:
        raise ValueError(f"{value!r} must not contain a single quote")
    return f"'{value}'"


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
    uri = _tracking_uri()
    if not _is_server(uri):
        return None
    return f"{_without_credentials(uri)}/#/runs/{urllib.parse.quote(run_id)}"


def experiment_ensure(*, name: str | None = None) -> str:
    """Return the id of the experiment, creating (or restoring) it on first use."""
    from mlflow.exceptions import MlflowException

    name = name or settings.MLFLOW_EXPERIMENT_NAME
    client = _client()
    with _translated(f"lookup of experiment {name!r}"):
        experiment = client.get_experiment_by_name(name)
        if experiment is not None:
            if experiment.lifecycle_stage == "deleted":
                client.restore_experiment(experiment.experiment_id)
            return experiment.experiment_id
        # A server chooses where artifacts go; only a local store needs to be told.
        location = None if _is_server(_tracking_uri()) else settings.MLFLOW_ARTIFACT_ROOT
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
    client = _client()
    experiment_id = experiment_ensure()
    with _translated(f"lookup of training run {run_key!r}"):
        finished = _runs_clean_up(client, experiment_id=experiment_id, run_key=run_key)
    if finished is not None:
        logger.info("training run %s already logged to MLflow as %s", run_key, finished)
        return LoggedRun(run_id=finished)

    with _translated(f"logging of training run {run_key!r}"):
        run = client.create_run(experiment_id, tags={RUN_KEY_TAG: run_key}, run_name=run_name)
    run_id = run.info.run_id
    try:
        with _translated(f"logging of training run {run_key!r}"):
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
        filter_string=f"tags.`{RUN_KEY_TAG}` = {_quoted(run_key)}",
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


def model_register(
    *,
    name: str,
    run_id: str,
    tags: Mapping[str, Any] | None = None,
    wait_seconds: int = 60,
    logged: LoggedRun | None = None,
) -> int:
    """Register the model logged by `run_id` under `name` and return the MLflow version number.

    Idempotent: a READY version of `name` from this run is returned instead of registering again.
    A version that does not become READY is deleted, so a failure leaves no half-registered version.
    `logged`, what training_run_log returned for this run, spares looking the run and its model up.
    """
    client = _client()
    fresh = bool(logged and logged.run_id == run_id and logged.model_id and logged.model_source)
    with _translated(f"registration of run {run_id!r} as {name!r}"):
        # A run training_run_log has just created has no version yet: only an older one may.
        existing = (
            []
            if fresh
            else client.search_model_versions(f"name = {_quoted(name)} and run_id = {_quoted(run_id)}")
        )
        for version in sorted(existing, key=lambda mv: int(mv.version)):
            if version.status == "PENDING_REGISTRATION":
                version = _version_wait(client, name=name, version=version.version, wait_seconds=wait_seconds)
            if version.status == "READY":
                return int(version.version)
            client.delete_model_version(name, version.version)

        if fresh:
            model_id, source = logged.model_id, logged.model_source
        else:
            model_id, source = _finished_run_model(client, run_id=run_id)
        created = _version_create(
            client, name=name, source=source, run_id=run_id, tags=tags, model_id=model_id
        )
    try:
        with _translated(f"registration of run {run_id!r} as {name!r}"):
            ready = created
            if created.status != "READY":
                ready = _version_wait(client, name=name, version=created.version, wait_seconds=wait_seconds)
            if ready.status != "READY":
                raise RegistryUnavailable(
                    f"model {name!r} version {created.version} ended as {ready.status}: "
                    f"{ready.status_message}"
                )
    except BaseException:
        with contextlib.suppress(Exception):
            client.delete_model_version(name, created.version)
        raise
    logger.info("registered run %s as model %s version %s", run_id, name, created.version)
    return int(created.version)


def _version_create(
    client: mlflow.MlflowClient,
    *,
    name: str,
    source: str,
    run_id: str,
    tags: Mapping[str, Any] | None,
    model_id: str | None,
) -> Any:
    """A new version of `name`, creating the registered model when it is the first (the rare case: the
    version is tried first, which spares a refused create on every later registration)."""
    from mlflow.exceptions import MlflowException

    def create() -> Any:
        # The storage location, not models:/<id>: a SQL registry resolves that through the global client.
        return client.create_model_version(
            name, source, run_id=run_id, tags=dict(tags or {}), model_id=model_id, await_creation_for=0
        )

    try:
        return create()
    except MlflowException as exc:
        if exc.error_code not in _NOT_FOUND_CODES:
            raise
    try:
        client.create_registered_model(name)
    except MlflowException as exc:
        if exc.error_code not in ("RESOURCE_ALREADY_EXISTS", "ALREADY_EXISTS"):
            raise
    return create()


def _finished_run_model(client: mlflow.MlflowClient, *, run_id: str) -> tuple[str, str]:
    """The id and location of the model a FINISHED run logged."""
    run = client.get_run(run_id)
    if run.info.status != "FINISHED":
        raise RegistryError(f"run {run_id} is {run.info.status}, not FINISHED: its model may be incomplete")
    model_id = run.data.tags.get(MODEL_ID_TAG)
    if not model_id:
        raise ModelNotFound(f"run {run_id} logged no model")
    return model_id, client.get_logged_model(model_id).artifact_location


def _version_wait(client: mlflow.MlflowClient, *, name: str, version: str, wait_seconds: int) -> Any:
    deadline = time.monotonic() + wait_seconds
    current = client.get_model_version(name, version)
    while current.status == "PENDING_REGISTRATION":
        if time.monotonic() > deadline:
            raise RegistryUnavailable(f"model {name!r} version {version} was not READY after {wait_seconds}s")
        time.sleep(0.5)
        current = client.get_model_version(name, version)
    return current


def model_version_delete(*, name: str, version: int) -> None:
    """Delete the version (its aliases go with it); deleting a missing version does nothing."""
    with contextlib.suppress(ModelNotFound), _translated(f"deletion of {name!r} version {version}"):
        _client().delete_model_version(name, str(version))


def registered_model_delete_if_empty(*, name: str) -> bool:
    """Delete the registered model `name` when it holds no version; returns whether it was deleted.

    MLflow deletes a registered model together with its versions, so one with any version is left alone.
    A missing model is not an error.
    """
    from mlflow.exceptions import MlflowException

    client = _client()
    with _translated(f"deletion of model {name!r}"):
        try:
            if client.search_model_versions(f"name = {_quoted(name)}", max_results=1):
                return False
            client.delete_registered_model(name)
        except MlflowException as exc:
            if exc.error_code in _NOT_FOUND_CODES:
                return False
            raise
    logger.info("deleted model %s, which had no versions, from MLflow's registry", name)
    return True


#: Tries of an alias update that lost a race with a concurrent update of the same alias.
ALIAS_ATTEMPTS = 4
# How the store words a refused duplicate row (SQLite, PostgreSQL, MySQL), also through a tracking server.
_DUPLICATE_WORDS = ("UNIQUE constraint failed", "duplicate key value", "Duplicate entry")


def _is_duplicate(exc: BaseException) -> bool:
    """Whether exc (or its cause) is a unique-constraint refusal: another writer inserted the row first."""
    import sqlalchemy.exc

    while exc is not None:
        if isinstance(exc, sqlalchemy.exc.IntegrityError) or any(w in str(exc) for w in _DUPLICATE_WORDS):
            return True
        exc = exc.__cause__  # type: ignore[assignment]
    return False


def _alias_update(action: str, update: Any) -> None:
    """Run an alias update, again when it lost a race: MLflow checks for the alias row, then inserts it,
    so two updates at once can both insert and one is refused as a duplicate. That is no outage: the
    retry finds the row and updates it."""
    for attempt in range(1, ALIAS_ATTEMPTS + 1):
        try:
            with _translated(action):
                update()
            return
        except RegistryError as exc:
            if attempt == ALIAS_ATTEMPTS or not _is_duplicate(exc):
                raise
            logger.info("MLflow %s collided with a concurrent update; retrying", action)
            time.sleep(0.05 * attempt)


def alias_set(*, name: str, alias: str, version: int) -> None:
    """Point the alias at the version, moving it away from whichever version held it."""
    _alias_update(
        f"setting alias {alias!r} of {name!r} to version {version}",
        lambda: _client().set_registered_model_alias(name, alias, str(version)),
    )


def alias_delete(*, name: str, alias: str) -> None:
    """Remove the alias; removing an alias that is not set does nothing."""
    _alias_update(
        f"removing alias {alias!r} of {name!r}", lambda: _client().delete_registered_model_alias(name, alias)
    )


def aliases_get(*, name: str) -> dict[str, int]:
    with _translated(f"lookup of model {name!r}"):
        registered = _client().get_registered_model(name)
    return {alias: int(version) for alias, version in registered.aliases.items()}
