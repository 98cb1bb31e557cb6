"""The work of a training run's attempt: read, train, store, log, register and record; and its undo."""

from __future__ import annotations

import json
import logging
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from django.db import transaction
from threadpoolctl import threadpool_limits

from datasets import selectors as dataset_selectors
from jobs import engine
from ml import artifacts
from ml.errors import ArtifactError, TrainingInputError
from ml.examples import example_rows_pick
from ml.holdout import HoldoutPlan
from ml.train import model_train
from mlops_site import storage
from models_registry import mlflow_gateway, webhook_services
from models_registry import services as registry_services
from models_registry.models import ModelVersion, RegisteredModel, WebhookEvent
from monitoring import prometheus
from training.models import TrainingRun

if TYPE_CHECKING:
    from ml import onnx_export

logger = logging.getLogger(__name__)


class RunAttempt(engine.Attempt[TrainingRun]):
    """An attempt at a run: reports progress, and remembers what it registered and stored, to undo it."""

    def __init__(self, spec: engine.JobSpec[TrainingRun], job: TrainingRun) -> None:
        super().__init__(spec, job)
        self.mlflow_version: int | None = None
        self.stored_keys: list[str] = []

    @property
    def run(self) -> TrainingRun:
        return self.job

    def progress(self, percent: int, message: str) -> None:
        """Record progress and renew the lease; raises LeaseLost when another attempt took over."""
        self.write(progress=percent, progress_message=message[:255])
        self.job.progress, self.job.progress_message = percent, message

    def released_fields(self, message: str) -> dict[str, Any]:
        return {"progress_message": message[:255]}

    def fail(self, message: str) -> engine.JobOutcome:
        outcome = super().fail(message)
        if outcome.status == "failed":
            prometheus.training_run_finished(
                algorithm=self.run.algorithm, outcome="failed", started_at=self.run.started_at
            )
        return outcome


def run_work(attempt: RunAttempt) -> None:
    """Train, store, log, register and record the run's model version, renewing the lease meanwhile."""
    # Fitting alone can outlast the lease: the heartbeat renews it until the steps end, and stops before
    # any clean-up, so the lease is not renewed after the run is handed back.
    # One native thread, as in model_train: scikit-learn's OpenMP predict of histogram gradient boosting
    # (the ONNX check, MLflow's signature) spun idle threads and ran several times slower.
    with attempt.heartbeat(), threadpool_limits(limits=1):
        _steps(attempt)


def failure_reason(exc: Exception) -> str | None:
    """The reason a run failed for, as its owner reads it; None for an unexpected error."""
    if isinstance(exc, TrainingInputError | ArtifactError):
        return str(exc)
    if isinstance(exc, mlflow_gateway.RegistryError):
        return f"MLflow refused the run: {exc}"
    if isinstance(exc, FileNotFoundError):
        return f"The stored file {exc} is missing from object storage."
    return None


def _steps(attempt: RunAttempt) -> None:
    # The ONNX conversion imports onnx and scikit-learn: loaded by the first training, not by every worker.
    from ml import onnx_export

    run = attempt.run
    dataset_version = run.dataset_version
    attempt.progress(5, f"Reading dataset {dataset_version}")
    frame = dataset_selectors.dataset_version_frame(version=dataset_version)

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
        holdout_plan=HoldoutPlan.from_dict(run.holdout) if run.holdout else None,
    )
    # The model may have been registered by another run since this one was queued.
    registered = RegisteredModel.objects.filter(name=run.model_name).first()
    if registered is not None and registered.task and registered.task != result.task:
        raise TrainingInputError(
            f"Model '{registered.name}' holds {registered.task} versions, but this target was treated as "
            f"{result.task}. Set the task to {registered.task}, or train under another model name."
        )

    attempt.progress(55, "Converting to ONNX and storing the model files")
    # The conversion runs beside the skops file's dump and store: most of its time is onnxruntime building
    # the check's session (11 s for a 100-tree forest on 100,000 rows), which releases the GIL.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="onnx-convert") as pool:
        converting = pool.submit(
            onnx_export.onnx_convert,
            pipeline=result.pipeline,
            feature_schema=result.feature_schema,
            X_holdout=result.X_holdout,
            classes=result.classes,
            # model_train already has scikit-learn's predictions on the holdout; the check compares with them.
            sklearn_predictions=result.holdout_predictions,
            sklearn_probabilities=result.holdout_probabilities,
            # The check's sample of holdout rows is drawn with the run's seed: a repeated run checks the same.
            seed=run.seed,
        )
        skops_bytes = artifacts.skops_dump(result.pipeline)
        skops_sha256 = artifacts.sha256_hex(skops_bytes)
        skops_key = _model_object_store(attempt, data=skops_bytes, sha256=skops_sha256, kind=artifacts.SKOPS)
        conversion = converting.result()
    onnx_key = ""
    if conversion.available and conversion.data is not None and conversion.sha256 is not None:
        onnx_key = _model_object_store(
            attempt, data=conversion.data, sha256=conversion.sha256, kind=artifacts.ONNX
        )

    attempt.progress(70, "Logging to MLflow")
    summary = _training_summary(result, conversion)
    # The evaluation's reports and figures, made JSON-safe once for both MLflow and the version record.
    reports = _json_safe(result.artifacts)
    params = _json_safe(result.params)
    logged = mlflow_gateway.training_run_log(
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
            "model.name": run.model_name,
            "algorithm": run.algorithm,
            "task": result.task,
            "onnx.status": "available" if onnx_key else "unavailable",
        },
        artifacts=_mlflow_artifacts(result, summary, conversion, reports=reports),
        model=result.pipeline,
        # The file stored above: MLflow would otherwise dump the model again and load it back to check it.
        model_skops=skops_bytes,
        skops_trusted_types=artifacts.TRUSTED_TYPES,
        input_example=result.X_holdout,
        output_example=result.holdout_predictions,
        run_name=f"{run.model_name} run {run.pk}",
    )
    mlflow_run_id = logged.run_id
    attempt.write(mlflow_run_id=mlflow_run_id)
    run.mlflow_run_id = mlflow_run_id

    attempt.progress(85, "Registering the model in MLflow")
    attempt.mlflow_version = mlflow_gateway.model_register(
        name=run.model_name, run_id=mlflow_run_id, tags={"training_run": str(run.key)}, logged=logged
    )

    attempt.progress(95, "Recording the model version")
    _model_version_record(
        attempt,
        result=result,
        summary=summary,
        reports=reports,
        skops_key=skops_key,
        skops_sha256=skops_sha256,
        onnx_key=onnx_key,
        conversion=conversion,
        mlflow_run_id=mlflow_run_id,
    )


def _model_object_store(attempt: RunAttempt, *, data: bytes, sha256: str, kind: str) -> str:
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
            "onnx_checked_rows": conversion.checked_rows,
        }
    )


def _mlflow_artifacts(
    result: Any,
    summary: dict[str, Any],
    conversion: onnx_export.OnnxConversion,
    *,
    reports: dict[str, Any],
) -> dict[str, bytes | str]:
    files: dict[str, bytes | str] = {
        "feature_schema.json": json.dumps(_json_safe(result.feature_schema), indent=2),
        "training_summary.json": json.dumps(summary, indent=2),
    }
    for name, value in reports.items():
        if name == "figures":
            for figure_name, figure in value.items():
                files[f"figures/{figure_name}.json"] = json.dumps(figure)
        else:
            files[f"{name}.json"] = json.dumps(value, indent=2)
    if conversion.available and conversion.data is not None:
        files["onnx/model.onnx"] = conversion.data
    return files


def _model_version_record(
    attempt: RunAttempt,
    *,
    result: Any,
    summary: dict[str, Any],
    reports: dict[str, Any],
    skops_key: str,
    skops_sha256: str,
    onnx_key: str,
    conversion: onnx_export.OnnxConversion,
    mlflow_run_id: str,
) -> ModelVersion:
    run = attempt.run
    with transaction.atomic():
        # Registered here, with its first version; locked, so versions are numbered one at a time.
        registered = registry_services.registered_model_for_version(
            name=run.model_name, created_by=run.created_by
        )
        # The fence: only the attempt holding the lease may finish the run.
        if not attempt.mine().select_for_update().exists():
            raise attempt.lease_lost()
        if registered.task and registered.task != result.task:
            raise TrainingInputError(
                f"Model '{registered.name}' holds {registered.task} versions; this run trained {result.task}."
            )
        if registered.target_column and registered.target_column != run.target_column:
            raise TrainingInputError(
                f"Model '{registered.name}' predicts {registered.target_column!r}; this run predicts "
                f"{run.target_column!r}. Train under another model name."
            )
        version = ModelVersion.objects.filter(training_run=run).first()
        created = version is None
        if version is None:
            number = registry_services.version_number_next(registered)
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
                artifacts=reports,
                training_summary=summary,
                reference_profile=_json_safe(result.reference_profile),
                example_rows=example_rows_pick(result.X_holdout, result.feature_schema, seed=run.seed or 0),
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
        attempt.succeed(
            progress=100,
            progress_message=f"Registered as version {version.version}",
            mlflow_run_id=mlflow_run_id,
            task=run.task or result.task,
            registered_model=registered,
        )
        run.registered_model = registered
        if created:
            webhook_services.webhook_event_emit(
                registered_model=registered,
                event=WebhookEvent.VERSION_REGISTERED,
                payload=registry_services.model_version_payload(version),
                event_id=uuid.uuid5(run.key, f"version_registered:{version.pk}"),
            )
    prometheus.training_run_finished(algorithm=run.algorithm, outcome="succeeded", started_at=run.started_at)
    # The attempt's objects now belong to a version: nothing to undo after this point.
    attempt.stored_keys.clear()
    attempt.mlflow_version = None
    return version


def attempt_undo(attempt: RunAttempt) -> None:
    """Delete what this attempt registered or stored that no ModelVersion records."""
    if attempt.mlflow_version is not None:
        registration_discard(run=attempt.run, known_version=attempt.mlflow_version)
        attempt.mlflow_version = None
    for key in attempt.stored_keys:
        registry_services.model_object_delete_unreferenced(key=key)
    attempt.stored_keys.clear()


def registration_discard(*, run: TrainingRun, known_version: int | None) -> None:
    """Delete the run's MLflow model version unless a ModelVersion records it.

    Without `known_version` (an attempt that crashed before recording) the version is found by
    registering again, which returns the existing version of this MLflow run, and then deleted.
    """
    if not run.mlflow_run_id or ModelVersion.objects.filter(training_run_id=run.pk).exists():
        return
    name = run.model_name
    try:
        version = known_version or mlflow_gateway.model_register(name=name, run_id=run.mlflow_run_id)
        mlflow_gateway.model_version_delete(name=name, version=version)
        logger.info("run %s: deleted unrecorded MLflow version %s of %s", run.pk, version, name)
        _registered_name_discard(run=run, name=name)
    except mlflow_gateway.RegistryError:
        logger.exception("run %s: could not delete its unrecorded MLflow version of %s", run.pk, name)


def _registered_name_discard(*, run: TrainingRun, name: str) -> None:
    """Remove the name from MLflow's registry when the discarded version was all it held, so a failed
    first run leaves no empty model there; not while another run of the model may register a version."""
    if ModelVersion.objects.filter(registered_model__name=name).exists():
        return
    others = TrainingRun.objects.filter(model_name=name).exclude(pk=run.pk)
    if others.exclude(status__in=TrainingRun.TERMINAL).exists():
        return
    mlflow_gateway.registered_model_delete_if_empty(name=name)
