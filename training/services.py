"""Writes for training runs: queueing a run, executing it crash-safely, and recording the model version."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import threading
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pandas as pd
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.db import DatabaseError, InterfaceError, OperationalError, connection, transaction
from django.db.models import F, Max, Q
from django.db.models.functions import Coalesce
from django.utils import timezone
from threadpoolctl import threadpool_limits

from datasets.models import DatasetVersion
from ml import artifacts, catalogue, onnx_export
from ml.errors import ArtifactError, TrainingInputError
from ml.train import MAX_SEED, model_train
from mlops_site import storage
from models_registry import mlflow_gateway, webhook_services
from models_registry import services as registry_services
from models_registry.models import ModelVersion, RegisteredModel, WebhookEvent
from training.models import TrainingRun

logger = logging.getLogger(__name__)

# A worker renews its lease every LEASE_RENEW_SECONDS from a heartbeat thread and at every step; a run
# whose lease ran out was left by a dead worker and may be claimed again.
LEASE_SECONDS = 180
LEASE_RENEW_SECONDS = 30
# A run reclaimed this many times keeps killing its worker (out of memory?); it is failed instead.
MAX_ATTEMPTS = 3
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    mlflow_gateway.RegistryUnavailable,
    storage.StorageError,
    OperationalError,
    InterfaceError,
)
# Runs queued this long without being claimed lost their message (broker outage); they are re-sent.
STALE_QUEUED_MINUTES = 15
ERROR_MESSAGE_MAX_LENGTH = 4000
PARAM_NAME_MAX_LENGTH = 100


class LeaseLost(Exception):
    """Another attempt claimed the run after this attempt's lease ran out; this attempt must stop."""


@dataclass(frozen=True)
class ExecuteOutcome:
    """What one call of training_run_execute did.

    status: "succeeded", "failed", "skipped" (already finished or no such run), "busy" (another live
    attempt holds the lease; `retry_in` says when it expires) or "lost" (this attempt lost its lease).
    """

    status: str
    retry_in: int | None = None
    message: str = ""


# ------------------------------------------------------------------------------
# Creating runs
# ------------------------------------------------------------------------------
def _structural_problems(
    *, params: Any, algorithm: Any, task: Any, seed: Any, test_size: Any, target_column: Any
) -> list[str]:
    problems = []
    if not isinstance(params, dict):
        problems.append(
            f'Hyperparameters must be a JSON object such as {{"max_depth": 3}}; got {type(params).__name__}.'
        )
    elif bad := [
        name for name in params if not isinstance(name, str) or not 0 < len(name) <= PARAM_NAME_MAX_LENGTH
    ]:
        problems.append(
            f"Hyperparameter names must be text of 1-{PARAM_NAME_MAX_LENGTH} characters: {bad!r}."
        )
    known = sorted({a.key for a in catalogue.algorithm_list()})
    if not isinstance(algorithm, str) or algorithm not in known:
        problems.append(f"Unknown algorithm {algorithm!r}. Choose one of: {', '.join(known)}.")
    if task not in (None, "", *catalogue.TASKS):
        problems.append(f"Unknown task {task!r}. Choose {' or '.join(catalogue.TASKS)}, or leave it empty.")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        problems.append(f"The seed must be a whole number from 0 to {MAX_SEED}; got {seed!r}.")
    if isinstance(test_size, bool) or not isinstance(test_size, int | float) or not 0 < test_size < 1:
        problems.append(f"The holdout fraction must be between 0 and 1 (for example 0.2); got {test_size!r}.")
    if target_column is not None and (not isinstance(target_column, str) or len(target_column) > 255):
        problems.append("The target column must be a column name of at most 255 characters.")
    return problems


def training_run_create(
    *,
    dataset_version: DatasetVersion | int,
    model_name: str,
    algorithm: str,
    params: dict[str, Any] | None,
    created_by: AbstractBaseUser | None,
    target_column: str | None = None,
    task: str | None = None,
    seed: int = 42,
    test_size: float = 0.2,
) -> TrainingRun:
    """Record a QUEUED run and send it to the worker when the transaction commits.

    Malformed requests (params not a JSON object, unknown algorithm or task name, missing dataset
    version, a target that contradicts the registered model) raise ValidationError. Problems with the
    data itself (unknown target column, one class, too few rows, bad hyperparameter values) are found
    by the worker and make the run FAILED with the reason.
    """
    from training.tasks import training_run_execute_task

    params = {} if params is None else params
    if isinstance(dataset_version, int) and not isinstance(dataset_version, bool):
        found = DatasetVersion.objects.select_related("dataset").filter(pk=dataset_version).first()
        if found is None:
            raise ValidationError(f"Dataset version {dataset_version} does not exist.")
        dataset_version = found
    if not isinstance(dataset_version, DatasetVersion) or dataset_version.pk is None:
        raise ValidationError("Choose an existing dataset version to train on.")
    target_column = (target_column or "").strip() or None
    task = task or None
    problems = _structural_problems(
        params=params,
        algorithm=algorithm,
        task=task,
        seed=seed,
        test_size=test_size,
        target_column=target_column,
    )
    if problems:
        raise ValidationError(problems)
    target_column = target_column or dataset_version.target_column

    with transaction.atomic():
        registered = registry_services.registered_model_get_or_create(name=model_name, created_by=created_by)
        if registered.target_column and registered.target_column != target_column:
            raise ValidationError(
                f"Model {registered.name!r} predicts {registered.target_column!r}; a run predicting "
                f"{target_column!r} must use another model name."
            )
        if task and registered.task and registered.task != task:
            raise ValidationError(
                f"Model {registered.name!r} is a {registered.task} model; "
                f"a {task} run must use another model name."
            )
        run = TrainingRun.objects.create(
            dataset_version=dataset_version,
            registered_model=registered,
            target_column=target_column,
            task=task or "",
            algorithm=algorithm,
            params=params,
            seed=seed,
            test_size=float(test_size),
            created_by=created_by,
            progress_message="Waiting for a worker",
        )
        run_id = run.pk
        # robust: a broker outage must not undo the recorded run; training_runs_stale_requeue re-sends it.
        transaction.on_commit(lambda: training_run_execute_task.delay(run_id), robust=True)
    return run


def training_run_retry(*, training_run: TrainingRun, created_by: AbstractBaseUser | None) -> TrainingRun:
    """Queue a new run with the inputs of a FAILED one; the failed run stays as it was, for the record."""
    if training_run.status != TrainingRun.Status.FAILED:
        raise ValidationError(
            f"Only failed runs can be retried; run {training_run.pk} is {training_run.status}."
        )
    return training_run_create(
        dataset_version=training_run.dataset_version,
        model_name=training_run.registered_model.name,
        algorithm=training_run.algorithm,
        params=training_run.params,
        created_by=created_by,
        target_column=training_run.target_column,
        task=training_run.task or None,
        seed=training_run.seed,
        test_size=training_run.test_size,
    )


def training_runs_stale_requeue(*, now: Any = None) -> list[int]:
    """Send again runs whose message was lost: QUEUED for long, or RUNNING with an expired lease.

    Safe to run at any time: the worker's conditional claim ignores runs another attempt holds.
    """
    from training.tasks import training_run_execute_task

    now = now or timezone.now()
    stale = TrainingRun.objects.filter(
        Q(status=TrainingRun.Status.QUEUED, created_at__lt=now - timedelta(minutes=STALE_QUEUED_MINUTES))
        | Q(status=TrainingRun.Status.RUNNING, lease_expires_at__lt=now)
    )
    run_ids = list(stale.values_list("pk", flat=True))
    for run_id in run_ids:
        training_run_execute_task.delay(run_id)
    return run_ids


# ------------------------------------------------------------------------------
# Claiming, the lease and progress
# ------------------------------------------------------------------------------
def _claim(*, run_id: int) -> tuple[TrainingRun | None, ExecuteOutcome | None]:
    now = timezone.now()
    claimable = Q(status=TrainingRun.Status.QUEUED) | Q(
        status=TrainingRun.Status.RUNNING, lease_expires_at__lt=now
    )
    claimable |= Q(status=TrainingRun.Status.RUNNING, lease_expires_at__isnull=True)
    claimed = (
        TrainingRun.objects.filter(claimable, pk=run_id).update(
            status=TrainingRun.Status.RUNNING,
            lease_expires_at=now + timedelta(seconds=LEASE_SECONDS),
            attempts=F("attempts") + 1,
            started_at=Coalesce("started_at", now),
            progress_message="Starting",
        )
        == 1
    )
    run = (
        TrainingRun.objects.select_related("dataset_version__dataset", "registered_model")
        .filter(pk=run_id)
        .first()
    )
    if run is None:
        return None, ExecuteOutcome("skipped", message=f"There is no training run {run_id}.")
    if claimed:
        return run, None
    if run.is_terminal:
        return None, ExecuteOutcome("skipped", message=f"Run {run_id} already {run.status}.")
    remaining = (run.lease_expires_at - now).total_seconds() if run.lease_expires_at else 0
    return None, ExecuteOutcome(
        "busy", retry_in=max(5, int(remaining) + 5), message="Another attempt holds the run."
    )


class _Attempt:
    """One claimed attempt: renews the lease (fenced by the attempt number) and reports progress."""

    def __init__(self, run: TrainingRun) -> None:
        self.run = run
        self.token = run.attempts
        self.mlflow_version: int | None = None
        self.stored_keys: list[str] = []
        self._stop = threading.Event()
        self._lost = threading.Event()
        self._heartbeat: threading.Thread | None = None

    def _mine(self) -> Any:
        return TrainingRun.objects.filter(
            pk=self.run.pk, status=TrainingRun.Status.RUNNING, attempts=self.token
        )

    def progress(self, percent: int, message: str) -> None:
        """Record progress and renew the lease; raises LeaseLost when another attempt took over."""
        if self._lost.is_set():
            raise LeaseLost(f"run {self.run.pk}: attempt {self.token} lost its lease")
        updated = self._mine().update(
            progress=percent,
            progress_message=message[:255],
            lease_expires_at=timezone.now() + timedelta(seconds=LEASE_SECONDS),
        )
        if updated != 1:
            raise LeaseLost(f"run {self.run.pk}: attempt {self.token} lost its lease")
        self.run.progress, self.run.progress_message = percent, message

    def heartbeat_start(self) -> None:
        self._heartbeat = threading.Thread(
            target=self._beat, name=f"training-run-{self.run.pk}-lease", daemon=True
        )
        self._heartbeat.start()

    def heartbeat_stop(self) -> None:
        self._stop.set()
        if self._heartbeat is not None:
            self._heartbeat.join(timeout=10)

    def _beat(self) -> None:
        # Training one step (fitting) can outlast the lease; the lease is renewed from here meanwhile.
        try:
            while not self._stop.wait(LEASE_RENEW_SECONDS):
                try:
                    renewed = self._mine().update(
                        lease_expires_at=timezone.now() + timedelta(seconds=LEASE_SECONDS)
                    )
                except DatabaseError:
                    logger.warning(
                        "run %s: could not renew the lease; trying again", self.run.pk, exc_info=True
                    )
                    continue
                if renewed != 1:
                    self._lost.set()
                    return
        finally:
            connection.close()


# ------------------------------------------------------------------------------
# Executing runs
# ------------------------------------------------------------------------------
def training_run_execute(*, run_id: int) -> ExecuteOutcome:
    """Claim the run and train, store, log, register and record its model version.

    Idempotent and crash-safe: the claim is a conditional UPDATE (QUEUED, or RUNNING with an expired
    lease), so a duplicate message finds the run busy or finished. A retry after a crash reuses the
    MLflow run (keyed by the run's `key`) and its registered version, and the ModelVersion is created
    once per run. Storage and MLflow calls happen outside transactions.

    Problems with the inputs make the run FAILED with the reason and return normally. Transient errors
    (MLflow, storage or the database unreachable) undo what this attempt registered, release the lease
    and are raised for the task to retry. Any failure deletes the MLflow version this attempt registered
    and the model files it stored, unless a ModelVersion records them.
    """
    run, outcome = _claim(run_id=run_id)
    if outcome is not None:
        return outcome
    assert run is not None
    attempt = _Attempt(run)
    if run.attempts > MAX_ATTEMPTS:
        message = (
            f"The run was interrupted {run.attempts - 1} times (the worker stopped or ran out of memory) "
            "and was given up."
        )
        _registration_discard(run=run, known_version=None)
        return _fail(attempt, message)
    try:
        attempt.heartbeat_start()
        try:
            # One native thread, as in model_train: scikit-learn's OpenMP predict of histogram gradient
            # boosting (the ONNX check, MLflow's signature) spun idle threads and ran several times slower.
            with threadpool_limits(limits=1):
                _steps(attempt)
        finally:
            # Stopped before any clean-up below, so the lease is not renewed after it is handed back.
            attempt.heartbeat_stop()
    except LeaseLost:
        logger.warning(
            "run %s: attempt %s lost its lease to another attempt; stopping", run_id, attempt.token
        )
        return ExecuteOutcome("lost", message="Another attempt took over the run.")
    except TRANSIENT_ERRORS as exc:
        logger.warning("run %s: transient failure, will retry: %s", run_id, exc)
        _attempt_undo(attempt)
        _release(attempt, f"Waiting to retry: {exc}")
        raise
    except (TrainingInputError, ArtifactError) as exc:
        _attempt_undo(attempt)
        return _fail(attempt, str(exc))
    except mlflow_gateway.RegistryError as exc:
        _attempt_undo(attempt)
        return _fail(attempt, f"MLflow refused the run: {exc}")
    except FileNotFoundError as exc:
        _attempt_undo(attempt)
        return _fail(attempt, f"The stored file {exc} is missing from object storage.")
    except Exception as exc:
        logger.exception("run %s failed unexpectedly", run_id)
        _attempt_undo(attempt)
        return _fail(attempt, f"Unexpected error ({type(exc).__name__}): {exc}")
    return ExecuteOutcome("succeeded")


def _steps(attempt: _Attempt) -> None:
    run = attempt.run
    dataset_version = run.dataset_version
    attempt.progress(5, f"Reading dataset {dataset_version}")
    frame = _dataset_frame(dataset_version)

    attempt.progress(15, f"Training {run.algorithm} on {len(frame)} rows")
    result = model_train(
        frame=frame,
        schema_columns=dataset_version.schema.get("columns", []),
        target_column=run.target_column,
        algorithm=run.algorithm,
        params=run.params,
        task=run.task or None,
        seed=run.seed,
        test_size=run.test_size,
    )
    registered = run.registered_model
    if registered.task and registered.task != result.task:
        raise TrainingInputError(
            f"Model '{registered.name}' holds {registered.task} versions, but this target was treated as "
            f"{result.task}. Set the task to {registered.task}, or train under another model name."
        )

    attempt.progress(55, "Converting to ONNX and storing the model files")
    skops_bytes = artifacts.skops_dump(result.pipeline)
    skops_sha256 = artifacts.sha256_hex(skops_bytes)
    conversion = onnx_export.onnx_convert(
        pipeline=result.pipeline,
        feature_schema=result.feature_schema,
        X_holdout=result.X_holdout,
        classes=result.classes,
        # model_train already has scikit-learn's predictions on the holdout; the check compares with them.
        sklearn_predictions=result.holdout_predictions,
        sklearn_probabilities=result.holdout_probabilities,
    )
    skops_key = _model_object_store(attempt, data=skops_bytes, sha256=skops_sha256, kind=artifacts.SKOPS)
    onnx_key = ""
    if conversion.available and conversion.data is not None and conversion.sha256 is not None:
        onnx_key = _model_object_store(
            attempt, data=conversion.data, sha256=conversion.sha256, kind=artifacts.ONNX
        )

    attempt.progress(70, "Logging to MLflow")
    summary = _training_summary(result, conversion)
    params = _json_safe(result.params)
    mlflow_run_id = mlflow_gateway.training_run_log(
        run_key=str(run.key),
        params={
            **{f"model.{name}": value for name, value in params.items()},
            "algorithm": run.algorithm,
            "task": result.task,
            "seed": run.seed,
            "test_size": run.test_size,
            "target_column": run.target_column,
        },
        metrics=result.metrics,
        tags={
            "dataset.sha256": dataset_version.sha256,
            "dataset.name": dataset_version.dataset.name,
            "dataset.version": dataset_version.version,
            "model.name": registered.name,
            "algorithm": run.algorithm,
            "task": result.task,
            "onnx.status": "available" if onnx_key else "unavailable",
        },
        artifacts=_mlflow_artifacts(result, summary, conversion),
        model=result.pipeline,
        skops_trusted_types=artifacts.TRUSTED_TYPES,
        input_example=result.X_holdout,
        run_name=f"{registered.name} run {run.pk}",
    )
    TrainingRun.objects.filter(pk=run.pk).update(mlflow_run_id=mlflow_run_id)
    run.mlflow_run_id = mlflow_run_id

    attempt.progress(85, "Registering the model in MLflow")
    attempt.mlflow_version = mlflow_gateway.model_register(
        name=registered.name, run_id=mlflow_run_id, tags={"training_run": str(run.key)}
    )

    attempt.progress(95, "Recording the model version")
    _model_version_record(
        attempt,
        result=result,
        summary=summary,
        skops_key=skops_key,
        skops_sha256=skops_sha256,
        onnx_key=onnx_key,
        conversion=conversion,
        mlflow_run_id=mlflow_run_id,
    )


def _dataset_frame(dataset_version: DatasetVersion) -> pd.DataFrame:
    data = storage.read_bytes(dataset_version.object_key)
    if data is None:
        raise FileNotFoundError(dataset_version.object_key)
    if artifacts.sha256_hex(data) != dataset_version.sha256:
        raise ArtifactError(
            f"The stored file of dataset version {dataset_version} does not match its recorded sha256; "
            "it was changed or damaged, so nothing was trained on it."
        )
    # The same reading as the upload check, so the columns match the recorded schema.
    return pd.read_csv(io.BytesIO(data), encoding="utf-8-sig", low_memory=False)


def _model_object_store(attempt: _Attempt, *, data: bytes, sha256: str, kind: str) -> str:
    key = registry_services.model_object_key(sha256=sha256, kind=kind)
    if storage.exists(key) and storage.size(key) == len(data):
        return key
    storage.put_bytes(key, data)
    attempt.stored_keys.append(key)
    return key


def _json_safe(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def _training_summary(result: Any, conversion: onnx_export.OnnxConversion) -> dict[str, Any]:
    return _json_safe(
        {
            "split": result.split,
            "metrics_omitted": result.metrics_omitted,
            "excluded_columns": result.excluded_columns,
            "fit_seconds": round(result.fit_seconds, 3),
            "fit_warnings": result.warnings,
            "onnx_max_probability_diff": conversion.max_probability_diff,
            "onnx_max_value_diff": conversion.max_value_diff,
        }
    )


def _mlflow_artifacts(
    result: Any, summary: dict[str, Any], conversion: onnx_export.OnnxConversion
) -> dict[str, bytes | str]:
    files: dict[str, bytes | str] = {
        "feature_schema.json": json.dumps(_json_safe(result.feature_schema), indent=2),
        "training_summary.json": json.dumps(summary, indent=2),
    }
    for name, value in result.artifacts.items():
        if name == "figures":
            for figure_name, figure in value.items():
                files[f"figures/{figure_name}.json"] = json.dumps(_json_safe(figure))
        else:
            files[f"{name}.json"] = json.dumps(_json_safe(value), indent=2)
    if conversion.available and conversion.data is not None:
        files["onnx/model.onnx"] = conversion.data
    return files


def _model_version_record(
    attempt: _Attempt,
    *,
    result: Any,
    summary: dict[str, Any],
    skops_key: str,
    skops_sha256: str,
    onnx_key: str,
    conversion: onnx_export.OnnxConversion,
    mlflow_run_id: str,
) -> ModelVersion:
    run = attempt.run
    with transaction.atomic():
        registered = RegisteredModel.objects.select_for_update().get(pk=run.registered_model_id)
        # The fence: only the attempt holding the lease may finish the run.
        if not attempt._mine().select_for_update().exists():
            raise LeaseLost(f"run {run.pk}: attempt {attempt.token} lost its lease")
        if registered.task and registered.task != result.task:
            raise TrainingInputError(
                f"Model '{registered.name}' holds {registered.task} versions; this run trained {result.task}."
            )
        version = ModelVersion.objects.filter(training_run=run).first()
        created = version is None
        if version is None:
            number = (registered.versions.aggregate(latest=Max("version"))["latest"] or 0) + 1
            version = ModelVersion.objects.create(
                registered_model=registered,
                version=number,
                source=ModelVersion.Source.TRAINED,
                training_run=run,
                dataset_version=run.dataset_version,
                task=result.task,
                algorithm=run.algorithm,
                params=_json_safe(result.params),
                seed=run.seed,
                feature_schema=_json_safe(result.feature_schema),
                target_column=run.target_column,
                classes=_json_safe(result.classes),
                metrics=_json_safe(result.metrics),
                artifacts=_json_safe(result.artifacts),
                training_summary=summary,
                skops_key=skops_key,
                skops_sha256=skops_sha256,
                onnx_key=onnx_key,
                onnx_sha256=(conversion.sha256 or "") if onnx_key else "",
                onnx_status=ModelVersion.OnnxStatus.AVAILABLE
                if onnx_key
                else ModelVersion.OnnxStatus.UNAVAILABLE,
                onnx_reason="" if onnx_key else (conversion.reason or ""),
                mlflow_run_id=mlflow_run_id,
                mlflow_version=attempt.mlflow_version,
                created_by=run.created_by,
            )
        if not registered.task or not registered.target_column:
            registered.task = registered.task or result.task
            registered.target_column = registered.target_column or run.target_column
            registered.save(update_fields=["task", "target_column"])
        now = timezone.now()
        attempt._mine().update(
            status=TrainingRun.Status.SUCCEEDED,
            progress=100,
            progress_message=f"Registered as version {version.version}",
            error_message="",
            finished_at=now,
            lease_expires_at=None,
            mlflow_run_id=mlflow_run_id,
            task=run.task or result.task,
        )
        if created:
            webhook_services.webhook_event_emit(
                registered_model=registered,
                event=WebhookEvent.VERSION_REGISTERED,
                payload=registry_services.model_version_payload(version),
                event_id=uuid.uuid5(run.key, f"version_registered:{version.pk}"),
            )
    # The attempt's objects now belong to a version: nothing to undo after this point.
    attempt.stored_keys.clear()
    attempt.mlflow_version = None
    return version


# ------------------------------------------------------------------------------
# Failure: undo, release, fail
# ------------------------------------------------------------------------------
def _attempt_undo(attempt: _Attempt) -> None:
    """Delete what this attempt registered or stored that no ModelVersion records."""
    if attempt.mlflow_version is not None:
        _registration_discard(run=attempt.run, known_version=attempt.mlflow_version)
        attempt.mlflow_version = None
    for key in attempt.stored_keys:
        registry_services.model_object_delete_unreferenced(key=key)
    attempt.stored_keys.clear()


def _registration_discard(*, run: TrainingRun, known_version: int | None) -> None:
    """Delete the run's MLflow model version unless a ModelVersion records it.

    Without `known_version` (an attempt that crashed before recording) the version is found by
    registering again, which returns the existing version of this MLflow run, and then deleted.
    """
    if not run.mlflow_run_id or ModelVersion.objects.filter(training_run_id=run.pk).exists():
        return
    name = run.registered_model.name
    try:
        version = known_version or mlflow_gateway.model_register(name=name, run_id=run.mlflow_run_id)
        mlflow_gateway.model_version_delete(name=name, version=version)
        logger.info("run %s: deleted unrecorded MLflow version %s of %s", run.pk, version, name)
    except mlflow_gateway.RegistryError:
        logger.exception("run %s: could not delete its unrecorded MLflow version of %s", run.pk, name)


def _release(attempt: _Attempt, message: str) -> None:
    """Hand the run back for the task's retry: the lease ends now and the attempt is not counted.

    `attempts` thus counts claims that ended without a hand-back (crashes) plus the current one, which
    is what MAX_ATTEMPTS limits; the number stays unique among live attempts, as the lease fence needs.
    """
    with contextlib.suppress(DatabaseError):
        attempt._mine().update(
            lease_expires_at=timezone.now(), attempts=F("attempts") - 1, progress_message=message[:255]
        )


def _fail(attempt: _Attempt, message: str) -> ExecuteOutcome:
    message = message[:ERROR_MESSAGE_MAX_LENGTH]
    marked = attempt._mine().update(
        status=TrainingRun.Status.FAILED,
        error_message=message,
        progress_message="Failed",
        finished_at=timezone.now(),
        lease_expires_at=None,
    )
    if not marked:
        logger.warning(
            "run %s: attempt %s failed after losing its lease: %s", attempt.run.pk, attempt.token, message
        )
        return ExecuteOutcome("lost", message="Another attempt took over the run.")
    logger.info("run %s failed: %s", attempt.run.pk, message)
    return ExecuteOutcome("failed", message=message)


def training_run_fail(*, run_id: int, message: str) -> bool:
    """Mark a run that is not finished and not held by a live attempt FAILED (the task gave up retrying).

    Returns whether the run was marked. Also deletes an MLflow version its attempts left unrecorded.
    """
    now = timezone.now()
    run = TrainingRun.objects.select_related("registered_model").filter(pk=run_id).first()
    if run is None:
        return False
    not_held = Q(lease_expires_at__isnull=True) | Q(lease_expires_at__lte=now)
    marked = TrainingRun.objects.filter(
        not_held, pk=run_id, status__in=[TrainingRun.Status.QUEUED, TrainingRun.Status.RUNNING]
    ).update(
        status=TrainingRun.Status.FAILED,
        error_message=message[:ERROR_MESSAGE_MAX_LENGTH],
        progress_message="Failed",
        finished_at=now,
        lease_expires_at=None,
    )
    if marked:
        _registration_discard(run=run, known_version=None)
    return marked == 1
