"""The manifest: built at export; parsed, type-checked and checked against the members at import."""

from __future__ import annotations

import datetime as dt
import hashlib
import math
import re
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError

from mlops_site import parsers
from models_registry import upload_services
from models_registry.models import ModelVersion, Stage, Task
from models_registry.transfer.archive import DATASET_MEMBER, FILE_MEMBERS, MANIFEST, ONNX_MEMBER, SKOPS_MEMBER
from models_registry.transfer.checker import Checker
from models_registry.transfer.errors import ArchiveRefused
from models_registry.transfer.lineage import username, version_lineage, when

FORMAT_NAME = "mlops-model-version"
FORMAT_VERSION = 1
#: The most example rows an archive may carry for the predict form (a trained version keeps 5).
EXAMPLE_ROWS_MAX = 20
_SHA256 = re.compile(r"^[0-9a-f]{64}\Z")
_NUMBER = (int, float)


def source_site() -> dict[str, str]:
    """This site as an archive names it: SITE_NAME and, when known, its first trusted origin."""
    origins = list(getattr(settings, "CSRF_TRUSTED_ORIGINS", []) or [])
    return {"site_name": settings.SITE_NAME, "site_url": origins[0] if origins else ""}


def manifest_build(
    version: ModelVersion, *, members: dict[str, bytes], exported_at: dt.datetime
) -> dict[str, Any]:
    """The manifest of `version` listing the sha256 and size of every member in `members`."""
    registered = version.registered_model
    return {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "exported_at": exported_at.isoformat(),
        "source": source_site(),
        "model": {
            "name": registered.name,
            "description": registered.description,
            "min_metrics": registered.min_metrics,
        },
        "version": {
            "version": version.version,
            "source": version.source,
            "stage": version.stage,
            "task": version.task,
            "algorithm": version.algorithm,
            "params": version.params,
            "seed": version.seed,
            "feature_schema": version.feature_schema,
            "target_column": version.target_column,
            "classes": version.classes,
            "metrics": version.metrics,
            "artifacts": version.artifacts,
            "training_summary": version.training_summary,
            "reference_profile": version.reference_profile,
            "example_rows": version.example_rows,
            "skops_sha256": version.skops_sha256,
            "onnx_sha256": version.onnx_sha256,
            "onnx_status": version.onnx_status,
            "onnx_reason": version.onnx_reason,
            "mlflow_run_id": version.mlflow_run_id,
            "mlflow_version": version.mlflow_version,
            "created_by": username(version.created_by),
            "created_at": when(version.created_at),
        },
        "lineage": version_lineage(version),
        "files": {
            name: {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
            for name, data in members.items()
        },
    }


def manifest_origin(manifest: dict[str, Any]) -> dict[str, Any]:
    """The site, model and version an archive was exported from."""
    return {
        "site_name": manifest["source"]["site_name"],
        "site_url": manifest["source"]["site_url"],
        "model": manifest["model"]["name"],
        "version": manifest["version"]["version"],
    }


def manifest_parse(data: bytes) -> dict[str, Any]:
    """The manifest as a dict once it is well-formed JSON of a known format with the expected types."""
    try:
        manifest = parsers.json_loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ArchiveRefused(f"{MANIFEST} is not valid JSON: {exc}. Nothing was imported.") from None
    if not isinstance(manifest, dict):
        raise ArchiveRefused(f"{MANIFEST} must hold a JSON object. Nothing was imported.")
    if manifest.get("format") != FORMAT_NAME:
        raise ArchiveRefused(
            f"{MANIFEST} names format {manifest.get('format')!r}, not {FORMAT_NAME!r}: this is not a "
            "model version archive. Nothing was imported."
        )
    format_version = manifest.get("format_version")
    if format_version != FORMAT_VERSION or isinstance(format_version, bool):
        raise ArchiveRefused(
            f"The archive is in format version {format_version!r}, which this site does not know (it reads "
            f"version {FORMAT_VERSION}). Export it again from a site of the same release, or upgrade this "
            "site first. Nothing was imported."
        )
    check = Checker()
    check.get(manifest, "exported_at", "", (str,))
    source = check.get(manifest, "source", "", (dict,))
    check.get(source, "site_name", "source", (str,))
    check.get(source, "site_url", "source", (str,))
    model = check.get(manifest, "model", "", (dict,))
    check.get(model, "name", "model", (str,))
    check.get(model, "description", "model", (str,))
    check.get(model, "min_metrics", "model", (dict,))
    _version_check(check, check.get(manifest, "version", "", (dict,)))
    _lineage_check(check, check.get(manifest, "lineage", "", (dict,)))
    _files_check(check, check.get(manifest, "files", "", (dict,)))
    if check.problems:
        raise ArchiveRefused(
            [f"{MANIFEST} is not as expected: {problem}" for problem in check.problems]
            + ["Nothing was imported."]
        )
    _manifest_consistency_check(manifest)
    return manifest


def _version_check(check: Checker, version: dict[str, Any] | None) -> None:
    number = check.get(version, "version", "version", (int,))
    if number is not None and number < 1:
        check.problems.append("version.version must be 1 or more.")
    check.choice(version, "source", "version", ModelVersion.Source.values)
    check.choice(version, "stage", "version", Stage.values)
    task = check.choice(version, "task", "version", Task.values)
    check.get(version, "algorithm", "version", (str,))
    check.get(version, "params", "version", (dict,))
    check.get(version, "seed", "version", (int,), nullable=True)
    schema = check.get(version, "feature_schema", "version", (list,))
    check.get(version, "target_column", "version", (str,))
    classes = check.get(version, "classes", "version", (list,), nullable=True)
    metrics = check.get(version, "metrics", "version", (dict,))
    check.get(version, "artifacts", "version", (dict,))
    check.get(version, "training_summary", "version", (dict,))
    check.get(version, "reference_profile", "version", (dict,), nullable=True)
    examples = check.get(version, "example_rows", "version", (list,))
    for sha_field in ("skops_sha256", "onnx_sha256"):
        value = check.get(version, sha_field, "version", (str,))
        if value and not _SHA256.match(value):
            check.problems.append(f"version.{sha_field} is not a sha256 hex digest.")
    check.choice(version, "onnx_status", "version", ModelVersion.OnnxStatus.values)
    check.get(version, "onnx_reason", "version", (str,))
    check.get(version, "mlflow_run_id", "version", (str,))
    check.get(version, "mlflow_version", "version", (int,), nullable=True)
    check.get(version, "created_by", "version", (str,), nullable=True)
    check.get(version, "created_at", "version", (str,), nullable=True)
    if metrics:
        for name, value in metrics.items():
            if isinstance(value, bool) or not isinstance(value, _NUMBER):
                check.problems.append(f"version.metrics.{name} must be a number.")
    if examples is not None:
        check.problems.extend(example_rows_problems(examples, schema))
    if task == Task.REGRESSION and classes:
        check.problems.append("version.classes must be null for a regression model.")


def example_rows_problems(examples: list[Any], schema: list[Any] | None) -> list[str]:
    """What is wrong with the example rows: at most EXAMPLE_ROWS_MAX objects mapping the schema's feature
    names to a number, text or null (missing features read as null)."""
    if len(examples) > EXAMPLE_ROWS_MAX:
        return [f"version.example_rows holds {len(examples)} rows; at most {EXAMPLE_ROWS_MAX} are allowed."]
    names = {column.get("name") for column in schema or [] if isinstance(column, dict)}
    problems: list[str] = []
    for index, row in enumerate(examples):
        where = f"version.example_rows[{index}]"
        if not isinstance(row, dict):
            problems.append(f"{where} must be an object of feature values.")
            continue
        for name, value in row.items():
            if schema is not None and name not in names:
                problems.append(f"{where} names {name[:200]!r}, which is not a feature of the schema.")
            elif isinstance(value, bool) or not isinstance(value, (*_NUMBER, str, type(None))):
                problems.append(f"{where}.{name} must be a number, text or null.")
            elif isinstance(value, float) and not math.isfinite(value):
                problems.append(f"{where}.{name} must be a finite number.")
    return problems


def _lineage_check(check: Checker, lineage: dict[str, Any] | None) -> None:
    dataset = check.get(lineage, "dataset", "lineage", (dict,), nullable=True)
    if dataset is not None:
        check.get(dataset, "name", "lineage.dataset", (str,))
        check.get(dataset, "version", "lineage.dataset", (int,))
        sha = check.get(dataset, "sha256", "lineage.dataset", (str,))
        if sha is not None and not _SHA256.match(sha):
            check.problems.append("lineage.dataset.sha256 is not a sha256 hex digest.")
        check.get(dataset, "row_count", "lineage.dataset", (int,))
        check.get(dataset, "columns", "lineage.dataset", (list,))
        check.get(dataset, "target_column", "lineage.dataset", (str,))
        check.get(dataset, "original_filename", "lineage.dataset", (str,))
        check.get(dataset, "lineage", "lineage.dataset", (dict,))
    check.get(lineage, "training_run", "lineage", (dict,), nullable=True)
    check.get(lineage, "parent_version", "lineage", (dict,), nullable=True)
    check.get(lineage, "imported_from", "lineage", (dict,), nullable=True)
    check.get(lineage, "trained_by", "lineage", (str,), nullable=True)
    check.get(lineage, "trained_at", "lineage", (str,), nullable=True)


def _files_check(check: Checker, files: dict[str, Any] | None) -> None:
    for name, entry in (files or {}).items():
        if name not in FILE_MEMBERS:
            check.problems.append(f"files lists {name[:200]!r}, which is not a member an archive may hold.")
            continue
        if not isinstance(entry, dict):
            check.problems.append(f"files.{name} must be an object with sha256 and size.")
            continue
        sha = check.get(entry, "sha256", f"files.{name}", (str,))
        size = check.get(entry, "size", f"files.{name}", (int,))
        if sha is not None and not _SHA256.match(sha):
            check.problems.append(f"files.{name}.sha256 is not a sha256 hex digest.")
        elif size is not None and size < 0:
            check.problems.append(f"files.{name}.size must not be negative.")


def _manifest_consistency_check(manifest: dict[str, Any]) -> None:
    version, files, lineage = manifest["version"], manifest["files"], manifest["lineage"]
    problems: list[str] = []
    if SKOPS_MEMBER not in files and ONNX_MEMBER not in files:
        problems.append(f"The archive holds no model file ({SKOPS_MEMBER} or {ONNX_MEMBER}).")
    for member, field in ((SKOPS_MEMBER, "skops_sha256"), (ONNX_MEMBER, "onnx_sha256")):
        listed = files.get(member, {}).get("sha256", "")
        if listed != version[field]:
            problems.append(
                f"version.{field} ({version[field] or 'empty'}) differs from the sha256 the archive lists "
                f"for {member} ({listed or 'absent'})."
            )
    if DATASET_MEMBER in files:
        dataset = lineage["dataset"]
        if dataset is None:
            problems.append(f"The archive holds {DATASET_MEMBER} but its lineage names no dataset version.")
        elif dataset["sha256"] != files[DATASET_MEMBER]["sha256"]:
            problems.append(f"{DATASET_MEMBER}'s sha256 differs from the dataset version its lineage names.")
    if version["onnx_status"] == ModelVersion.OnnxStatus.AVAILABLE and ONNX_MEMBER not in files:
        problems.append(f"The version's ONNX file is marked available but {ONNX_MEMBER} is not listed.")
    try:
        upload_services.feature_schema_validate(version["feature_schema"])
    except ValidationError as exc:
        problems.extend(f"version.feature_schema: {message}" for message in exc.messages)
    if problems:
        raise ArchiveRefused([*problems, "Nothing was imported."])


def checksums_verify(manifest: dict[str, Any], members: dict[str, bytes]) -> None:
    """The archive holds exactly the manifest and the files it lists, each with its sha256 and size."""
    expected = {MANIFEST, *manifest["files"]}
    missing = sorted(expected - set(members))
    extra = sorted(set(members) - expected)
    if missing or extra:
        raise ArchiveRefused(
            ([f"The manifest lists {', '.join(missing)}, which the archive lacks."] if missing else [])
            + ([f"The archive holds {', '.join(extra)}, which the manifest does not list."] if extra else [])
            + ["Nothing was imported."]
        )
    for name, entry in manifest["files"].items():
        data = members[name]
        if len(data) != entry["size"] or hashlib.sha256(data).hexdigest() != entry["sha256"]:
            raise ArchiveRefused(
                f"{name} does not match the sha256 the manifest records for it ({entry['sha256']}): the "
                "archive was changed or damaged on its way. Nothing was imported."
            )
