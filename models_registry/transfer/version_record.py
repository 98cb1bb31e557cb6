"""The version row an import records, and the lookup that makes importing the same archive again a no-op."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from datasets.models import DatasetVersion
from models_registry import services, webhook_services
from models_registry.models import ModelVersion, Stage, WebhookEvent
from models_registry.transfer.archive import ONNX_MEMBER, SKOPS_MEMBER
from models_registry.transfer.lineage import IMPORTED_FROM
from models_registry.transfer.manifest import manifest_origin


def imported_version_find(*, name: str, manifest: dict[str, Any]) -> ModelVersion | None:
    """The version of `name` this archive was imported as before, or the very version it was exported from."""
    version = manifest["version"]
    origin = manifest_origin(manifest)
    candidates = ModelVersion.objects.filter(
        registered_model__name=name, skops_sha256=version["skops_sha256"], onnx_sha256=version["onnx_sha256"]
    ).select_related("registered_model")
    for candidate in candidates:
        recorded = (candidate.training_summary or {}).get(IMPORTED_FROM) or {}
        if all(recorded.get(key) == value for key, value in origin.items()):
            return candidate
        is_the_origin = (
            origin["site_name"] == settings.SITE_NAME
            and origin["model"] == name
            and origin["version"] == candidate.version
        )
        if is_the_origin:
            return candidate
    return None


def _imported_from(manifest: dict[str, Any]) -> dict[str, Any]:
    version, lineage = manifest["version"], manifest["lineage"]
    return {
        **manifest_origin(manifest),
        "stage": version["stage"],
        "source": version["source"],
        "exported_at": manifest["exported_at"],
        "imported_at": timezone.now().isoformat(),
        "skops_sha256": version["skops_sha256"],
        "onnx_sha256": version["onnx_sha256"],
        "mlflow_run_id": version["mlflow_run_id"],
        "mlflow_version": version["mlflow_version"],
        "created_by": version["created_by"],
        "created_at": version["created_at"],
        "trained_by": lineage["trained_by"],
        "trained_at": lineage["trained_at"],
        "dataset": lineage["dataset"],
        "training_run": lineage["training_run"],
        "parent_version": lineage["parent_version"],
        "earlier": version["training_summary"].get(IMPORTED_FROM),
    }


def imported_version_record(
    manifest: dict[str, Any],
    *,
    name: str,
    keys: dict[str, str],
    dataset_version: DatasetVersion | None,
    mlflow_run_id: str,
    mlflow_version: int | None,
    created_by: AbstractBaseUser | None,
) -> tuple[ModelVersion, bool]:
    """Record the next version of `name` (source imported, stage none) and emit version_registered; the
    version an import of the same archive recorded meanwhile with created=False."""
    version = manifest["version"]
    summary = {**version["training_summary"], IMPORTED_FROM: _imported_from(manifest)}
    with transaction.atomic():
        registered = services.registered_model_for_version(
            name=name, created_by=created_by, description=manifest["model"]["description"]
        )
        # Under the model's lock: a concurrent import of the same archive has committed or waits.
        existing = imported_version_find(name=name, manifest=manifest)
        if existing is not None:
            return existing, False
        if registered.task and registered.task != version["task"]:
            raise ValidationError(
                f"Model {name!r} holds {registered.task} versions; this archive is {version['task']}. "
                "Import it under another name (--name)."
            )
        if (
            registered.target_column
            and version["target_column"]
            and registered.target_column != version["target_column"]
        ):
            raise ValidationError(
                f"Model {name!r} predicts {registered.target_column!r}; this archive predicts "
                f"{version['target_column']!r}. Import it under another name (--name)."
            )
        number = services.version_number_next(registered)
        has_onnx = ONNX_MEMBER in keys
        created = ModelVersion.objects.create(
            registered_model=registered,
            version=number,
            source=ModelVersion.Source.IMPORTED,
            dataset_version=dataset_version,
            task=version["task"],
            algorithm=version["algorithm"],
            params=version["params"],
            seed=version["seed"],
            feature_schema=version["feature_schema"],
            target_column=version["target_column"],
            classes=version["classes"],
            metrics=version["metrics"],
            artifacts=version["artifacts"],
            training_summary=summary,
            reference_profile=version["reference_profile"],
            example_rows=version["example_rows"],
            skops_key=keys.get(SKOPS_MEMBER, ""),
            skops_sha256=version["skops_sha256"],
            onnx_key=keys.get(ONNX_MEMBER, ""),
            onnx_sha256=version["onnx_sha256"],
            onnx_status=ModelVersion.OnnxStatus.AVAILABLE
            if has_onnx
            else ModelVersion.OnnxStatus.UNAVAILABLE,
            onnx_reason=version["onnx_reason"] if not has_onnx else "",
            mlflow_run_id=mlflow_run_id,
            mlflow_version=mlflow_version,
            stage=Stage.NONE,
            created_by=created_by,
        )
        if not registered.task or not registered.target_column:
            registered.task = registered.task or version["task"]
            registered.target_column = registered.target_column or version["target_column"]
            registered.save(update_fields=["task", "target_column"])
        webhook_services.webhook_event_emit(
            registered_model=registered,
            event=WebhookEvent.VERSION_REGISTERED,
            payload={**services.model_version_payload(created), IMPORTED_FROM: manifest_origin(manifest)},
        )
    return created, True
