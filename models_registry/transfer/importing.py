"""The import: every check before anything is written, then storage, MLflow and the version row."""

from __future__ import annotations

import hashlib
import io
import logging
from dataclasses import dataclass
from typing import IO, Any

from django.contrib.auth.models import AbstractBaseUser

from datasets import services as dataset_services
from datasets.models import DatasetVersion
from ml import artifacts
from mlops_site import storage
from models_registry import services
from models_registry.models import ModelVersion
from models_registry.transfer.archive import (
    DATASET_MEMBER,
    MANIFEST,
    ONNX_MEMBER,
    SKOPS_MEMBER,
    archive_members_read,
)
from models_registry.transfer.errors import ArchiveRefused
from models_registry.transfer.lineage import IMPORTED_FROM
from models_registry.transfer.manifest import checksums_verify, manifest_parse
from models_registry.transfer.mlflow_registration import imported_version_register
from models_registry.transfer.undo import ImportUndo
from models_registry.transfer.verification import models_check
from models_registry.transfer.version_record import imported_version_find, imported_version_record

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ImportResult:
    """What an import did: `created` is False when the archive had been imported before (idempotent)."""

    model_version: ModelVersion
    created: bool
    dataset_version: DatasetVersion | None = None
    dataset_created: bool = False


def model_version_import(
    *, archive: IO[bytes], created_by: AbstractBaseUser | None, name: str | None = None
) -> ImportResult:
    """Import an exported version as the next version of `name` (default: its name at the source).

    Everything is checked before anything is written: the archive's members, their sizes and sha256, the
    manifest's format and types, the model files (skops with our trusted types only, ONNX checked, both
    predicting alike). The version starts in stage none: promotion stays a separate decision with the
    quality gate. Idempotent: an archive imported before returns that version with created=False.
    All or nothing: on any failure the stored files, the MLflow registration and a dataset version this
    call created are removed again. Raises ArchiveRefused (ArchiveTooLarge for a member over its limit)
    or ValidationError naming the problem, StorageError or mlflow_gateway.RegistryError when those
    systems fail.
    """
    members = archive_members_read(archive)
    if MANIFEST not in members:
        raise ArchiveRefused(f"The archive has no {MANIFEST}: it is not a model version archive.")
    manifest = manifest_parse(members[MANIFEST])
    checksums_verify(manifest, members)
    target = services.registered_model_name_validate(name or manifest["model"]["name"])
    checked = models_check(manifest, members)

    existing = imported_version_find(name=target, manifest=manifest)
    if existing is not None:
        return ImportResult(model_version=existing, created=False, dataset_version=existing.dataset_version)

    undo = ImportUndo()
    try:
        dataset_version, dataset_created = _dataset_link(manifest, members, created_by=created_by, undo=undo)
        keys = {
            member: _model_file_store(members[member], kind=kind, undo=undo)
            for member, kind in ((SKOPS_MEMBER, artifacts.SKOPS), (ONNX_MEMBER, artifacts.ONNX))
            if member in members
        }
        mlflow_run_id, mlflow_version = imported_version_register(
            manifest, members, checked=checked, name=target, undo=undo
        )
        version, created = imported_version_record(
            manifest,
            name=target,
            keys=keys,
            dataset_version=dataset_version,
            mlflow_run_id=mlflow_run_id,
            mlflow_version=mlflow_version,
            created_by=created_by,
        )
    except BaseException:
        undo.run(name=target)
        raise
    if not created:
        # Another import of the same archive recorded it meanwhile; what this call stored is not needed.
        undo.run(name=target)
        return ImportResult(model_version=version, created=False, dataset_version=version.dataset_version)
    logger.info("imported %s from %s", version, manifest["source"]["site_name"])
    return ImportResult(
        model_version=version, created=True, dataset_version=dataset_version, dataset_created=dataset_created
    )


def _dataset_link(
    manifest: dict[str, Any],
    members: dict[str, bytes],
    *,
    created_by: AbstractBaseUser | None,
    undo: ImportUndo,
) -> tuple[DatasetVersion | None, bool]:
    """The dataset version with the lineage's sha256: an existing one (same name first), else the one made
    from dataset.csv when the archive carries it, else None (the sha256 stays in the lineage)."""
    lineage = manifest["lineage"]["dataset"]
    if lineage is None:
        return None, False
    found = list(
        DatasetVersion.objects.filter(sha256=lineage["sha256"]).select_related("dataset").order_by("pk")
    )
    if found:
        same_name = [version for version in found if version.dataset.name == lineage["name"]]
        return (same_name or found)[0], False
    if DATASET_MEMBER not in members:
        return None, False
    source = manifest["source"]
    version, created = dataset_services.dataset_version_create(
        name=lineage["name"],
        file=io.BytesIO(members[DATASET_MEMBER]),
        target_column=lineage["target_column"],
        created_by=created_by,
        original_filename=lineage["original_filename"],
        lineage={
            IMPORTED_FROM: {
                "site_name": source["site_name"],
                "site_url": source["site_url"],
                "dataset": lineage["name"],
                "version": lineage["version"],
                "sha256": lineage["sha256"],
                "parent": lineage.get("parent"),
                "lineage": lineage["lineage"],
            }
        },
    )
    if version.sha256 != lineage["sha256"]:
        raise ArchiveRefused(f"{DATASET_MEMBER} was stored with another sha256 than its lineage names.")
    if created:
        undo.dataset_version = version
    return version, created


def _model_file_store(data: bytes, *, kind: str, undo: ImportUndo) -> str:
    key = services.model_object_key(sha256=hashlib.sha256(data).hexdigest(), kind=kind)
    if storage.exists(key) and storage.size(key) == len(data):
        return key
    storage.put_bytes(key, data)
    undo.keys.append(key)
    return key
