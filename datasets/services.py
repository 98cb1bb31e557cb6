"""Writes for datasets: the one path that validates, stores and records an uploaded CSV version, and the
deletion of versions and datasets that nothing uses."""

from __future__ import annotations

import hashlib
import io
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import IO, Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.core.files.uploadedfile import UploadedFile
from django.db import IntegrityError, transaction
from django.db.models import Max, Q

from datasets import columnar, csv_profile, selectors
from datasets.models import DATASET_NAME_MAX_LENGTH, Dataset, DatasetVersion, dataset_name_validator
from ml import csv_bytes
from mlops_site import errors, storage

logger = logging.getLogger(__name__)

# Two uploads of different files to one dataset can race for the same version number.
CREATE_ATTEMPTS = 3
# Path segments of the dataset pages that a dataset name would shadow.
RESERVED_NAMES = frozenset({"upload"})
TARGET_COLUMN_MAX_LENGTH = Dataset._meta.get_field("target_column").max_length or 255


def dataset_object_key(*, sha256: str) -> str:
    return f"datasets/sha256/{sha256[:2]}/{sha256}.csv"


def columnar_object_key(*, sha256: str) -> str:
    """Keyed by the copy's own bytes: another pyarrow may write the same CSV's copy differently."""
    return f"datasets/columnar/{sha256[:2]}/{sha256}.{columnar.SUFFIX}"


def dataset_version_create(
    *,
    name: str,
    file: IO[bytes] | UploadedFile,
    target_column: str | None,
    created_by: AbstractBaseUser | None,
    description: str = "",
    parent: DatasetVersion | int | None = None,
    original_filename: str = "",
    lineage: dict[str, Any] | None = None,
) -> tuple[DatasetVersion, bool]:
    """Validate, store and record a CSV file as the next version of dataset `name`.

    Returns (version, created).

    Idempotent: a file whose bytes equal an existing version of the same dataset returns that version
    with created=False, also when two identical uploads race. `parent` may be a version number of the
    same dataset. A new dataset needs a target column; later versions default to the dataset's target.
    `description` fills the dataset's description when it has none. `lineage` records how a derived
    version was made (see DatasetVersion.lineage).

    Raises ValidationError listing every problem found, or storage.StorageError when object storage
    fails; in both cases no row is written and no newly stored object is left behind.
    """
    name = (name or "").strip()
    target_column = (target_column or "").strip() or None
    original_filename = os.path.basename(original_filename or getattr(file, "name", "") or "")[:255]
    problems: list[str] = []

    name_is_valid = _dataset_name_problem(name) is None
    if not name_is_valid:
        problems.append(_dataset_name_problem(name) or "")
    dataset = Dataset.objects.filter(name=name).first() if name_is_valid else None
    parent_version, parent_problem = _resolve_parent(name=name, dataset=dataset, parent=parent)
    if parent_problem:
        problems.append(parent_problem)
    effective_target = target_column or (dataset.target_column if dataset else None)
    if effective_target is None:
        problems.append(
            f"A target column is required for the first version of dataset {name!r}."
            if name_is_valid
            else "A target column is required for the first version of a new dataset."
        )
    elif len(effective_target) > TARGET_COLUMN_MAX_LENGTH:
        problems.append(f"The target column name is too long: at most {TARGET_COLUMN_MAX_LENGTH} characters.")

    with csv_bytes.seekable(file) as readable:
        scan = csv_bytes.scan_bytes(readable, max_bytes=settings.DATASET_MAX_UPLOAD_MB * 1024 * 1024)
        problems.extend(scan.problems)

        if not problems and dataset is not None:
            existing = _existing_version(dataset=dataset, sha256=scan.sha256)
            if existing is not None:
                if target_column is None or target_column == existing.target_column:
                    return existing, False
                problems.append(
                    f"This file is identical to version {existing.version} of {dataset.name!r}, which uses "
                    f"target column {existing.target_column!r}; the same content cannot be stored again "
                    f"with target column {target_column!r}."
                )

        report = None
        if scan.is_readable_text:
            report = csv_profile.read_csv_report(
                readable,
                target_column=effective_target,
                min_rows=settings.DATASET_MIN_ROWS,
                max_columns=settings.DATASET_MAX_COLUMNS,
            )
            problems.extend(report.problems)
        if problems or report is None or report.profile is None or effective_target is None:
            raise ValidationError(problems)

        object_key = dataset_object_key(sha256=scan.sha256)
        stored = _store_object(object_key=object_key, file=readable, size_bytes=scan.size_bytes)
    newly_stored = [object_key] if stored else []
    try:
        columnar_key, columnar_sha256 = _columnar_store(report, newly_stored=newly_stored)
        return _record_version(
            name=name,
            description=description,
            target_column=effective_target,
            created_by=created_by,
            parent=parent_version,
            sha256=scan.sha256,
            object_key=object_key,
            original_filename=original_filename,
            size_bytes=scan.size_bytes,
            profile=report.profile,
            lineage=lineage or {},
            columnar_key=columnar_key,
            columnar_sha256=columnar_sha256,
        )
    except BaseException:
        for key in newly_stored:
            _delete_unreferenced_object(key)
        raise


def _columnar_store(report: csv_profile.CsvReport, *, newly_stored: list[str]) -> tuple[str, str]:
    """Store the parsed rows' columnar copy; its key and sha256, or two empty strings when there is none."""
    frame, report.frame = report.frame, None
    copy = columnar.columnar_bytes(frame) if frame is not None else None
    if copy is None:
        return "", ""
    sha256 = hashlib.sha256(copy).hexdigest()
    key = columnar_object_key(sha256=sha256)
    if _store_object(object_key=key, file=io.BytesIO(copy), size_bytes=len(copy)):
        newly_stored.append(key)
    return key, sha256


def _existing_version(*, dataset: Dataset, sha256: str) -> DatasetVersion | None:
    return dataset.versions.filter(sha256=sha256).first()


def _store_object(*, object_key: str, file: IO[bytes], size_bytes: int) -> bool:
    """Store the bytes under their content address; returns True when this call wrote the object."""
    if storage.exists(object_key):
        if storage.size(object_key) == size_bytes:
            return False
        # Only an interrupted earlier write leaves a different size under a content address.
        logger.warning("replacing truncated object %s", object_key)
        storage.delete(object_key)
    try:
        storage.put(object_key, file)
    except storage.StorageError:
        _delete_unreferenced_object(object_key)
        raise
    return True


def _dataset_name_problem(name: str) -> str | None:
    if not name:
        return "A dataset name is required."
    if len(name) > DATASET_NAME_MAX_LENGTH:
        return f"Dataset name {name[:80]!r} is too long: at most {DATASET_NAME_MAX_LENGTH} characters."
    try:
        dataset_name_validator(name)
    except ValidationError:
        return f"Dataset name {name!r} is not valid. {dataset_name_validator.message}"
    if name in RESERVED_NAMES:
        return f"Dataset name {name!r} is reserved; choose another name."
    return None


def _resolve_parent(
    *, name: str, dataset: Dataset | None, parent: DatasetVersion | int | None
) -> tuple[DatasetVersion | None, str | None]:
    if parent is None:
        return None, None
    if isinstance(parent, DatasetVersion):
        if dataset is None or parent.dataset_id != dataset.pk:
            return None, (
                f"Parent version {parent.dataset.name!r} v{parent.version} belongs to another dataset; "
                f"a parent must be a version of {name!r}."
            )
        return parent, None
    if dataset is None:
        return None, f"Dataset {name!r} does not exist yet, so it has no version {parent} to use as parent."
    found = dataset.versions.filter(version=parent).first()
    if found is None:
        return None, f"Dataset {name!r} has no version {parent} to use as parent."
    return found, None


def _record_version(
    *,
    name: str,
    description: str,
    target_column: str,
    created_by: AbstractBaseUser | None,
    parent: DatasetVersion | None,
    sha256: str,
    object_key: str,
    original_filename: str,
    size_bytes: int,
    profile: csv_profile.CsvProfile,
    lineage: dict[str, Any],
    columnar_key: str,
    columnar_sha256: str,
) -> tuple[DatasetVersion, bool]:
    for attempt in range(1, CREATE_ATTEMPTS + 1):
        try:
            with transaction.atomic():
                dataset, _ = Dataset.objects.get_or_create(
                    name=name,
                    defaults={
                        "description": description,
                        "target_column": target_column,
                        "created_by": created_by,
                    },
                )
                # Serialises version numbering per dataset on databases that support row locks.
                dataset = Dataset.objects.select_for_update().get(pk=dataset.pk)
                if description and not dataset.description:
                    dataset.description = description
                    dataset.save(update_fields=["description"])
                existing = _existing_version(dataset=dataset, sha256=sha256)
                if existing is not None:
                    return existing, False
                # The parent's row lock keeps a deletion of it from committing under the new reference.
                if parent is not None and not _locked_versions([parent.pk]):
                    raise ValidationError(
                        f"Parent version {parent.version} of {name!r} was deleted meanwhile; choose another."
                    )
                latest = dataset.versions.aggregate(latest=Max("version"))["latest"] or 0
                number = max(latest, dataset.highest_version) + 1
                dataset.highest_version = number
                dataset.save(update_fields=["highest_version"])
                version = DatasetVersion.objects.create(
                    dataset=dataset,
                    version=number,
                    sha256=sha256,
                    object_key=object_key,
                    original_filename=original_filename,
                    size_bytes=size_bytes,
                    schema=profile.schema(target_column=target_column),
                    profile=profile.profile(),
                    row_count=profile.row_count,
                    column_count=len(profile.columns),
                    parent=parent,
                    lineage=lineage,
                    columnar_key=columnar_key,
                    columnar_sha256=columnar_sha256,
                    created_by=created_by,
                )
                return version, True
        except IntegrityError:
            winner = DatasetVersion.objects.filter(dataset__name=name, sha256=sha256).first()
            if winner is not None:
                return winner, False
            if attempt == CREATE_ATTEMPTS:
                raise
            logger.info("dataset %s: version number taken by a concurrent upload, retrying", name)
    raise AssertionError("unreachable")


def _delete_unreferenced_object(object_key: str) -> None:
    # Another dataset may hold the same bytes under the same content-addressed key. When even this
    # check fails the object stays: an orphan is harmless, a deleted object that a version uses is not.
    try:
        if DatasetVersion.objects.filter(Q(object_key=object_key) | Q(columnar_key=object_key)).exists():
            return
        storage.delete(object_key)
    except Exception:
        logger.exception("could not remove stored object %s that no dataset version uses", object_key)


class DatasetInUse(errors.Conflict):
    """A dataset or version that something uses cannot be deleted (409); `errors` names what uses it."""

    code = "in_use"


@dataclass(frozen=True)
class Deletion:
    """What a deletion removed: the dataset's name, the version numbers, and whether the dataset went too."""

    dataset_name: str
    versions: tuple[int, ...]
    dataset_deleted: bool


def dataset_version_delete(*, version: DatasetVersion) -> Deletion:
    """Delete a version nothing uses, and its dataset when it was the last version.

    Raises DatasetInUse naming every kind of row that uses it (training runs, model versions, retrainings,
    derived versions), and NotFound when it is already gone. The stored CSV and columnar copy are removed
    after the transaction commits, and only when no other version (of any dataset) has the same content.
    """
    dataset_name, number = version.dataset.name, version.version
    with transaction.atomic():
        # Dataset first, then version, as uploads lock them: the dataset's lock also keeps an upload from
        # choosing this version as its parent meanwhile.
        dataset = Dataset.objects.select_for_update().filter(pk=version.dataset_id).first()
        locked = _locked_versions([version.pk])
        if dataset is None or not locked:
            raise errors.NotFound(f"Dataset {dataset_name!r} has no version {number} any more.")
        _refuse_if_used(locked, label=f"{dataset_name} v{number}")
        keys = _stored_keys(locked)
        locked[0].delete()
        dataset_deleted = not dataset.versions.exists()
        if dataset_deleted:
            dataset.delete()
        _remove_objects_on_commit(keys)
    return Deletion(dataset_name=dataset_name, versions=(number,), dataset_deleted=dataset_deleted)


def dataset_delete(*, dataset: Dataset) -> Deletion:
    """Delete a dataset with all its versions, when nothing outside the dataset uses any of them.

    Raises DatasetInUse naming what uses them, and NotFound when the dataset is already gone. Stored
    objects are removed after the commit, as dataset_version_delete does.
    """
    name = dataset.name
    with transaction.atomic():
        if not Dataset.objects.select_for_update().filter(pk=dataset.pk).exists():
            raise errors.NotFound(f"There is no dataset named {name!r} any more.")
        pks = list(DatasetVersion.objects.filter(dataset_id=dataset.pk).values_list("pk", flat=True))
        locked = _locked_versions(pks)
        _refuse_if_used(locked, label=f"The dataset {name}")
        keys = _stored_keys(locked)
        # Newest first: a derived version always has a higher number than its parent (PROTECT).
        for version in sorted(locked, key=lambda v: -v.version):
            version.delete()
        Dataset.objects.filter(pk=dataset.pk).delete()
        _remove_objects_on_commit(keys)
    return Deletion(
        dataset_name=name, versions=tuple(sorted(v.version for v in locked)), dataset_deleted=True
    )


def _locked_versions(pks: Sequence[int]) -> list[DatasetVersion]:
    """The versions' rows, locked until the transaction ends.

    A new training run (training.services) or derived version (_record_version) locks the row it refers to
    the same way, so the one that comes second sees the other's result and refuses with a clear reason.
    Any other reference written meanwhile still cannot dangle: the foreign key fails its commit.
    """
    return list(DatasetVersion.objects.select_for_update().filter(pk__in=pks).order_by("pk"))


def _refuse_if_used(versions: list[DatasetVersion], *, label: str) -> None:
    references = selectors.dataset_version_references(versions=versions, among=versions)
    if not references:
        return
    raise DatasetInUse(
        selectors.deletion_refusal(label=label, references=references),
        errors=[errors.problem(str(reference), code="in_use") for reference in references],
    )


def _stored_keys(versions: list[DatasetVersion]) -> set[str]:
    return {key for version in versions for key in (version.object_key, version.columnar_key) if key}


def _remove_objects_on_commit(keys: set[str]) -> None:
    def remove() -> None:
        for key in sorted(keys):
            _delete_unreferenced_object(key)

    # After the commit only: were the rows' deletion rolled back, their files would be gone. An upload of the
    # same bytes to another dataset in the moment between the check and the removal would find its file
    # missing (and say so when read); a lock spanning storage is not worth that window.
    transaction.on_commit(remove)
