"""An imported version logged and registered in this site's MLflow, as versions trained here are."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pandas as pd

from ml import artifacts
from ml.features import columns_from_rows
from models_registry import mlflow_gateway
from models_registry.models import ModelVersion
from models_registry.transfer.archive import MANIFEST, ONNX_MEMBER, SKOPS_MEMBER
from models_registry.transfer.manifest import manifest_origin
from models_registry.transfer.undo import ImportUndo
from models_registry.transfer.verification import CheckedModel


def _run_key(manifest: dict[str, Any], *, name: str) -> str:
    # The same archive under the same name finds its run again, so a retried import reuses it.
    identity = json.dumps(
        [
            manifest_origin(manifest),
            manifest["version"]["skops_sha256"],
            manifest["version"]["onnx_sha256"],
            name,
        ],
        sort_keys=True,
    )
    return f"import-{hashlib.sha256(identity.encode()).hexdigest()[:40]}"


def imported_version_register(
    manifest: dict[str, Any],
    members: dict[str, bytes],
    *,
    checked: CheckedModel,
    name: str,
    undo: ImportUndo,
) -> tuple[str, int | None]:
    """Log and register the version in this site's MLflow when it was in the source site's; ("", None)
    for versions the source kept out of MLflow (uploads) or without a skops file."""
    version = manifest["version"]
    if version["mlflow_version"] is None or checked.skops is None:
        return "", None
    origin = manifest_origin(manifest)
    lineage_dataset = manifest["lineage"]["dataset"] or {}
    params = {f"model.{key}": value for key, value in version["params"].items()}
    run = manifest["lineage"]["training_run"] or {}
    files: dict[str, bytes | str] = {
        "feature_schema.json": json.dumps(version["feature_schema"], indent=2),
        "training_summary.json": json.dumps(version["training_summary"], indent=2),
        "transfer/manifest.json": members[MANIFEST],
    }
    if ONNX_MEMBER in members:
        files["onnx/model.onnx"] = members[ONNX_MEMBER]
    logged = mlflow_gateway.training_run_log(
        run_key=_run_key(manifest, name=name),
        params={
            **params,
            "algorithm": version["algorithm"],
            "task": version["task"],
            "seed": version["seed"],
            "target_column": version["target_column"],
            **({"test_size": run["test_size"]} if "test_size" in run else {}),
        },
        metrics=version["metrics"],
        tags={
            "dataset.sha256": lineage_dataset.get("sha256", ""),
            "dataset.name": lineage_dataset.get("name", ""),
            "dataset.version": lineage_dataset.get("version", ""),
            "model.name": name,
            "algorithm": version["algorithm"],
            "task": version["task"],
            "onnx.status": "available" if ONNX_MEMBER in members else "unavailable",
            "import.source_site": origin["site_name"],
            "import.source_url": origin["site_url"],
            "import.source_model": origin["model"],
            "import.source_version": origin["version"],
            "import.source_mlflow_run_id": version["mlflow_run_id"],
        },
        artifacts=files,
        model=checked.skops.pipeline,
        model_skops=members[SKOPS_MEMBER],
        skops_trusted_types=artifacts.TRUSTED_TYPES,
        input_example=pd.DataFrame(columns_from_rows(checked.rows, version["feature_schema"])),
        output_example=checked.labels,
        run_name=f"{name} imported from {origin['site_name']} {origin['model']} v{origin['version']}",
    )
    mlflow_version = mlflow_gateway.model_register(
        name=name,
        run_id=logged.run_id,
        tags={"imported_from": f"{origin['site_name']}:{origin['model']}:{origin['version']}"},
        logged=logged,
    )
    if not ModelVersion.objects.filter(registered_model__name=name, mlflow_version=mlflow_version).exists():
        undo.mlflow_version = mlflow_version
    return logged.run_id, mlflow_version
