"""The export: a version's files read back from storage, checked, and written as one archive."""

from __future__ import annotations

import hashlib
import json
import logging
from typing import IO, Any

from django.core.exceptions import ValidationError
from django.utils import timezone

from mlops_site import storage
from models_registry.models import ModelVersion
from models_registry.transfer.archive import (
    ARCHIVE_KINDS,
    DATASET_MEMBER,
    MANIFEST,
    ONNX_MEMBER,
    SKOPS_MEMBER,
    archive_write,
)
from models_registry.transfer.errors import ExportRefused
from models_registry.transfer.manifest import manifest_build

logger = logging.getLogger(__name__)


def model_version_export(
    *, model_version: ModelVersion, output: IO[bytes], archive_kind: str = "tar", with_dataset: bool = False
) -> dict[str, Any]:
    """Write the version's archive to `output` and return its manifest.

    Every file is read back from storage and checked against the sha256 recorded with the version, so an
    archive never carries a damaged file. Raises ExportRefused naming the problem, StorageError when
    storage cannot be read.
    """
    if archive_kind not in ARCHIVE_KINDS:
        raise ValidationError(f"Unknown archive kind {archive_kind!r}: use tar, tar.gz or zip.")
    members: dict[str, bytes] = {}
    if model_version.skops_key:
        members[SKOPS_MEMBER] = _stored_file(
            key=model_version.skops_key, sha256=model_version.skops_sha256, what="skops file"
        )
    if model_version.onnx_key:
        members[ONNX_MEMBER] = _stored_file(
            key=model_version.onnx_key, sha256=model_version.onnx_sha256, what="ONNX file"
        )
    dataset_version = model_version.dataset_version
    if with_dataset:
        if dataset_version is None:
            raise ExportRefused(
                f"{model_version} records no dataset version (it was uploaded), so --with-dataset has "
                "nothing to add; export it without."
            )
        members[DATASET_MEMBER] = _stored_file(
            key=dataset_version.object_key, sha256=dataset_version.sha256, what="dataset file"
        )
    exported_at = timezone.now()
    manifest = manifest_build(model_version, members=members, exported_at=exported_at)
    manifest_bytes = json.dumps(manifest, indent=2, sort_keys=True, default=str).encode("utf-8")
    archive_write(
        output,
        kind=archive_kind,
        members={MANIFEST: manifest_bytes, **members},
        mtime=exported_at.timestamp(),
    )
    logger.info("exported %s with %s", model_version, ", ".join(members))
    return manifest


def _stored_file(*, key: str, sha256: str, what: str) -> bytes:
    data = storage.read_bytes(key)
    if data is None:
        raise ExportRefused(f"The {what} {key} is missing from object storage; nothing was exported.")
    if hashlib.sha256(data).hexdigest() != sha256:
        raise ExportRefused(
            f"The stored {what} {key} no longer matches the sha256 recorded for it ({sha256}); it was "
            "changed or damaged, so it is not exported."
        )
    return data
