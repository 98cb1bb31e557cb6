"""Reads for datasets: querysets with their related rows already joined, for pages and the API."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Collection
from dataclasses import dataclass

import pandas as pd
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.db.models import Count, Max, OuterRef, QuerySet, Subquery
from django.http import Http404

from datasets import columnar
from datasets.models import Dataset, DatasetVersion
from ml.errors import ArtifactError
from mlops_site import storage


def dataset_list() -> QuerySet[Dataset]:
    """Datasets with their latest version number, its row count, the version count and last upload time."""
    latest = DatasetVersion.objects.filter(dataset=OuterRef("pk")).order_by("-version")
    return (
        Dataset.objects.select_related("created_by")
        .annotate(
            latest_version=Max("versions__version"),
            version_count=Count("versions"),
            updated_at=Max("versions__created_at"),
            latest_row_count=Subquery(latest.values("row_count")[:1]),
            latest_column_count=Subquery(latest.values("column_count")[:1]),
        )
        .order_by("name")
    )


def dataset_get(*, name: str) -> Dataset:
    """The dataset with the list annotations; raises Http404 when there is none by that name."""
    dataset = dataset_list().filter(name=name).first()
    if dataset is None:
        raise Http404(f"No dataset named {name!r}.")
    return dataset


def dataset_version_list(*, dataset_name: str | None = None) -> QuerySet[DatasetVersion]:
    versions = DatasetVersion.objects.select_related("dataset", "parent", "created_by")
    if dataset_name is not None:
        versions = versions.filter(dataset__name=dataset_name)
    return versions.order_by("dataset__name", "-version")


def dataset_version_get(*, dataset_name: str, version: int) -> DatasetVersion:
    found = dataset_version_list(dataset_name=dataset_name).filter(version=version).first()
    if found is None:
        raise Http404(f"Dataset {dataset_name!r} has no version {version}.")
    return found


#: Referring rows named in a refusal, per kind; the rest are counted.
REFERENCE_EXAMPLES = 3


@dataclass(frozen=True)
class Reference:
    """Rows of one kind that use a dataset version: a training run, a model version, a derived version..."""

    kind: str
    kind_plural: str
    count: int
    examples: tuple[str, ...]

    def __str__(self) -> str:
        noun = self.kind if self.count == 1 else self.kind_plural
        named = ", ".join(self.examples)
        if self.count > len(self.examples):
            named += f" and {self.count - len(self.examples)} more"
        return f"{self.count} {noun}: {named}"


def dataset_version_references(
    *, versions: Collection[DatasetVersion], among: Collection[DatasetVersion] = ()
) -> list[Reference]:
    """What uses any of `versions`, one Reference per kind of row; empty when they may be deleted.

    Read from every relation to DatasetVersion the project declares (training runs, retrainings, model
    versions, derived versions, and any added later), so no kind of reference can be forgotten here.
    Versions in `among` do not count as references: a dataset deleted whole takes its derived versions
    with it.
    """
    pks = [version.pk for version in versions]
    excluded = {version.pk for version in among}
    found = []
    for relation in DatasetVersion._meta.related_objects:
        rows = relation.related_model._base_manager.filter(**{f"{relation.field.name}__in": pks})
        if relation.related_model is DatasetVersion:
            rows = rows.exclude(pk__in=excluded)
        count = rows.count()
        if not count:
            continue
        options = relation.related_model._meta
        kind, plural = str(options.verbose_name), str(options.verbose_name_plural)
        if relation.related_model is DatasetVersion:
            kind, plural = f"derived {kind}", f"derived {plural}"
        examples = tuple(str(row) for row in rows.order_by("pk")[:REFERENCE_EXAMPLES])
        found.append(Reference(kind=kind, kind_plural=plural, count=count, examples=examples))
    return found


def deletion_refusal(*, label: str, references: list[Reference]) -> str:
    """Why `label` (a version or a dataset) cannot be deleted, naming what uses it; "" when it can."""
    if not references:
        return ""
    return (
        f"{label} cannot be deleted: it is used by {'; '.join(str(r) for r in references)}. Data that "
        "trained or derived something is kept so that its lineage stays complete."
    )


def dataset_version_frame(*, version: DatasetVersion) -> pd.DataFrame:
    """The rows of a version as a DataFrame, parsed the way the upload was profiled.

    From the columnar copy when the version has one, else from the CSV; either way the stored bytes must
    match the recorded sha256. Raises FileNotFoundError when the object is missing, ArtifactError when
    its bytes changed, and storage.StorageError when storage fails.
    """
    key, sha256 = (
        (version.columnar_key, version.columnar_sha256)
        if version.columnar_key
        else (version.object_key, version.sha256)
    )
    data = storage.read_bytes(key)
    if data is None:
        raise FileNotFoundError(key)
    if hashlib.sha256(data).hexdigest() != sha256:
        raise ArtifactError(
            f"The stored file of dataset version {version} does not match its recorded sha256; "
            "it was changed or damaged, so it was not used."
        )
    if version.columnar_key:
        return columnar.frame_read(data)
    return pd.read_csv(io.BytesIO(data), encoding="utf-8-sig", low_memory=False)


def uploader_get(*, username: str | None) -> AbstractBaseUser | None:
    """The named user, or else the first superuser, or else the first staff member (None if there is none).

    Raises the user model's DoesNotExist when `username` names nobody.
    """
    users = get_user_model().objects.filter(is_active=True)
    if username:
        return get_user_model().objects.get(**{get_user_model().USERNAME_FIELD: username})
    return (
        users.filter(is_superuser=True).order_by("pk").first()
        or users.filter(is_staff=True).order_by("pk").first()
    )
