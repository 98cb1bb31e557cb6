"""Registering externally trained skops or ONNX files as model versions, with their feature schema checked."""

from __future__ import annotations

import logging
import os
from typing import IO, Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.db import transaction

from ml import artifacts, predictor
from ml.errors import ArtifactError, PredictionInputError
from ml.features import CATEGORICAL, NUMERIC
from mlops_site import parsers, storage
from models_registry import services, webhook_services
from models_registry.models import (
    TASK_METRICS,
    ModelVersion,
    Task,
    WebhookEvent,
)

logger = logging.getLogger(__name__)
FEATURE_SCHEMA_MAX_COLUMNS = 2000
CLASSES_MAX = 1000


def model_max_upload_bytes() -> int:
    # The whole file is read into memory to be checked, hence a cap of its own.
    return settings.MODEL_MAX_UPLOAD_MB * 1024 * 1024


def _read_capped(file: IO[bytes], *, filename: str) -> bytes:
    limit = model_max_upload_bytes()
    size = getattr(file, "size", None)
    too_big = ValidationError(
        f"{filename} is larger than the {limit // (1024 * 1024)} MB limit for model files; "
        "nothing was stored."
    )
    if isinstance(size, int) and size > limit:
        raise too_big
    if hasattr(file, "seek"):
        file.seek(0)
    data = file.read(limit + 1)
    if len(data) > limit:
        raise too_big
    return data


def _number_or_none(value: Any, *, where: str, problems: list[str]) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
        problems.append(f"{where} must be a number or null; got {value!r}.")
        return None
    return float(value)


def feature_schema_validate(value: Any) -> list[dict[str, Any]]:
    """Check an uploaded feature schema and return it in the form training writes.

    Each column: {"name": text, "kind": "numeric"|"categorical", optional "min"/"max" for numeric,
    optional "categories" (list of text) for categorical}. A JSON text is parsed first.
    """
    if isinstance(value, str | bytes):
        try:
            value = parsers.json_loads(value)
        except ValueError as exc:
            raise ValidationError(f"The feature schema is not valid JSON: {exc}") from None
    if not isinstance(value, list) or not value:
        raise ValidationError(
            "The feature schema must be a non-empty JSON list of columns like "
            '{"name": "age", "kind": "numeric"}.'
        )
    if len(value) > FEATURE_SCHEMA_MAX_COLUMNS:
        raise ValidationError(f"The feature schema lists more than {FEATURE_SCHEMA_MAX_COLUMNS} columns.")
    problems: list[str] = []
    seen: set[str] = set()
    schema = []
    for position, column in enumerate(value, start=1):
        where = f"Feature schema column {position}"
        if not isinstance(column, dict):
            problems.append(f"{where} must be an object with a name and a kind; got {column!r}.")
            continue
        name, kind = column.get("name"), column.get("kind")
        if not isinstance(name, str) or not name.strip() or len(name) > 255:
            problems.append(f"{where} needs a name of 1-255 characters.")
            continue
        where = f"Feature column {name!r}"
        if name in seen:
            problems.append(f"{where} appears twice.")
            continue
        seen.add(name)
        unknown = sorted(set(column) - {"name", "kind", "dtype", "min", "max", "categories", "missing_count"})
        if unknown:
            problems.append(f"{where} has unknown field(s): {', '.join(unknown)}.")
        if kind == NUMERIC:
            low = _number_or_none(column.get("min"), where=f"{where}: min", problems=problems)
            high = _number_or_none(column.get("max"), where=f"{where}: max", problems=problems)
            if low is not None and high is not None and low > high:
                problems.append(f"{where}: min {low:g} is greater than max {high:g}.")
            schema.append({"name": name, "kind": kind, "dtype": "float64", "min": low, "max": high})
        elif kind == CATEGORICAL:
            categories = column.get("categories", [])
            if not isinstance(categories, list) or not all(isinstance(c, str) for c in categories):
                problems.append(f"{where}: categories must be a list of text values.")
                categories = []
            schema.append(
                {"name": name, "kind": kind, "dtype": "string", "categories": sorted(set(categories))}
            )
        else:
            problems.append(f"{where} has kind {kind!r}; expected 'numeric' or 'categorical'.")
    if problems:
        raise ValidationError(problems)
    return schema


def _classes_validate(classes: Any, *, task: str) -> list[Any] | None:
    if isinstance(classes, str):
        try:
            classes = parsers.json_loads(classes) if classes.strip() else None
        except ValueError as exc:
            raise ValidationError(f"The classes are not valid JSON: {exc}") from None
    if task == Task.REGRESSION:
        if classes:
            raise ValidationError("A regression model has no classes; leave them empty.")
        return None
    if classes is None:
        return None
    if not isinstance(classes, list) or len(classes) < 2 or len(classes) > CLASSES_MAX:
        raise ValidationError(f"The classes must be a JSON list of 2 to {CLASSES_MAX} labels.")
    if not all(isinstance(c, str) or (isinstance(c, int) and not isinstance(c, bool)) for c in classes):
        raise ValidationError("Each class label must be text or a whole number.")
    if len(set(map(repr, classes))) != len(classes):
        raise ValidationError("The class labels must be distinct.")
    return classes


def _metrics_validate(metrics: Any, *, task: str) -> dict[str, float]:
    if metrics in (None, "", {}):
        return {}
    if isinstance(metrics, str):
        try:
            metrics = parsers.json_loads(metrics)
        except ValueError as exc:
            raise ValidationError(f"The metrics are not valid JSON: {exc}") from None
    if not isinstance(metrics, dict):
        raise ValidationError("The metrics must be a JSON object of metric names to numbers.")
    known = TASK_METRICS[task]
    problems = [f"Unknown metric {name!r} for {task}." for name in metrics if name not in known]
    problems += [
        f"Metric {name!r} must be a number; got {value!r}."
        for name, value in metrics.items()
        if isinstance(value, bool) or not isinstance(value, int | float) or value != value
    ]
    if problems:
        raise ValidationError(problems)
    return {name: float(value) for name, value in metrics.items()}


def _example_row(schema: list[dict[str, Any]]) -> dict[str, Any]:
    row: dict[str, Any] = {}
    for column in schema:
        if column["kind"] == NUMERIC:
            low, high = column.get("min"), column.get("max")
            row[column["name"]] = (
                (low + high) / 2 if low is not None and high is not None else (low or high or 0.0)
            )
        else:
            categories = column.get("categories") or []
            row[column["name"]] = categories[0] if categories else "unknown"
    return row


def model_version_upload(
    *,
    registered_model_name: str,
    file: IO[bytes],
    filename: str,
    feature_schema: Any,
    task: str,
    created_by: AbstractBaseUser | None,
    classes: Any = None,
    target_column: str = "",
    metrics: Any = None,
    description: str = "",
) -> ModelVersion:
    """Register an externally trained skops or ONNX file as the next version of a model.

    The file is recognised by its content and must be loadable with our trusted types (skops) or pass
    the ONNX checker, and it must predict one row built from the feature schema. Pickle, joblib and
    anything else are refused. Uploaded versions are not in MLflow. Raises ValidationError naming the
    problem; nothing is stored then.
    """
    filename = os.path.basename(filename or getattr(file, "name", "") or "model")[:255]
    name = services.registered_model_name_validate(registered_model_name)
    if task not in Task.values:
        raise ValidationError(f"Choose the model's task: {' or '.join(Task.values)}.")
    schema = feature_schema_validate(feature_schema)
    class_list = _classes_validate(classes, task=task)
    metric_values = _metrics_validate(metrics, task=task)
    target_column = (target_column or "").strip()
    data = _read_capped(file, filename=filename)
    try:
        uploaded = artifacts.uploaded_model_validate(data=data, filename=filename)
    except ArtifactError as exc:
        raise ValidationError(f"{exc} Nothing was stored.") from None

    try:
        if uploaded.kind == artifacts.SKOPS:
            model = predictor.SklearnPredictor(data, sha256=uploaded.sha256, feature_schema=schema)
            if task == Task.CLASSIFICATION and model.classes is not None:
                if class_list is not None and [str(c) for c in class_list] != [str(c) for c in model.classes]:
                    raise ValidationError(
                        f"The classes given ({class_list}) differ from the model's own ({model.classes})."
                    )
                class_list = model.classes
        else:
            model = predictor.OnnxPredictor(
                data, sha256=uploaded.sha256, feature_schema=schema, classes=class_list
            )
            if task == Task.CLASSIFICATION and class_list is None:
                class_list = model.classes
        labels, _ = model.predict([_example_row(schema)])
    except (ArtifactError, PredictionInputError) as exc:
        raise ValidationError(f"The model does not work with the given feature schema: {exc}") from None
    except ValidationError:
        raise
    except Exception as exc:  # a foreign pipeline can fail in any way on a row built from the schema
        raise ValidationError(
            f"The model could not predict a row built from the feature schema: {type(exc).__name__}: {exc}"
        ) from None
    if task == Task.CLASSIFICATION and class_list is None:
        raise ValidationError("Give the class labels of this classification model (a JSON list).")
    if len(labels) != 1:
        raise ValidationError("The model did not return one prediction for one row.")

    key = services.model_object_key(sha256=uploaded.sha256, kind=uploaded.kind)
    newly_stored = not storage.exists(key)
    if newly_stored:
        storage.put_bytes(key, data)
    try:
        with transaction.atomic():
            registered = services.registered_model_for_version(
                name=name, created_by=created_by, description=description
            )
            if registered.task and registered.task != task:
                raise ValidationError(
                    f"Model {name!r} holds {registered.task} versions; this upload is {task}."
                )
            if registered.target_column and target_column and registered.target_column != target_column:
                raise ValidationError(
                    f"Model {name!r} predicts {registered.target_column!r}, not {target_column!r}."
                )
            number = services.version_number_next(registered)
            is_skops = uploaded.kind == artifacts.SKOPS
            version = ModelVersion.objects.create(
                registered_model=registered,
                version=number,
                source=ModelVersion.Source.UPLOADED,
                task=task,
                feature_schema=schema,
                target_column=target_column or registered.target_column,
                classes=class_list,
                metrics=metric_values,
                training_summary={"uploaded_filename": filename, "size_bytes": uploaded.size},
                skops_key=key if is_skops else "",
                skops_sha256=uploaded.sha256 if is_skops else "",
                onnx_key="" if is_skops else key,
                onnx_sha256="" if is_skops else uploaded.sha256,
                onnx_status=ModelVersion.OnnxStatus.UNAVAILABLE
                if is_skops
                else ModelVersion.OnnxStatus.AVAILABLE,
                onnx_reason="Uploaded as a skops file; no ONNX conversion is made for uploads."
                if is_skops
                else "",
                created_by=created_by,
            )
            if not registered.task or (target_column and not registered.target_column):
                registered.task = registered.task or task
                registered.target_column = registered.target_column or target_column
                registered.save(update_fields=["task", "target_column"])
            webhook_services.webhook_event_emit(
                registered_model=registered,
                event=WebhookEvent.VERSION_REGISTERED,
                payload=services.model_version_payload(version),
            )
    except BaseException:
        if newly_stored:
            services.model_object_delete_unreferenced(key=key)
        raise
    return version
