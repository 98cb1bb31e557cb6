"""Datasets and their immutable, content-addressed versions."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import RegexValidator
from django.db import models

DATASET_NAME_MAX_LENGTH = 64

dataset_name_validator = RegexValidator(
    regex=r"^[a-z0-9][a-z0-9_-]*\Z",
    message=(
        "Use lowercase letters, digits, hyphens and underscores, starting with a letter or digit "
        f"(at most {DATASET_NAME_MAX_LENGTH} characters)."
    ),
)


class ColumnKind(models.TextChoices):
    NUMERIC = "numeric", "Numeric"
    CATEGORICAL = "categorical", "Categorical"
    TEXT = "text", "Text"


class Dataset(models.Model):
    """A named series of immutable CSV versions; `target_column` is the default for new versions."""

    name = models.CharField(
        max_length=DATASET_NAME_MAX_LENGTH, unique=True, validators=[dataset_name_validator]
    )
    description = models.TextField(blank=True)
    target_column = models.CharField(max_length=255)
    # The highest version number ever given: a deleted version's number is never given to other content.
    highest_version = models.PositiveIntegerField(default=0)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="datasets"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class DatasetVersion(models.Model):
    """One uploaded CSV file, never changed after it is written.

    The file lives in object storage under a key derived from its sha256, so identical content is
    stored once. `schema` holds the ordered columns (name, kind, dtype) and the target column;
    `profile` holds per-column missing counts and statistics in the same order.
    """

    dataset = models.ForeignKey(Dataset, on_delete=models.PROTECT, related_name="versions")
    version = models.PositiveIntegerField()
    sha256 = models.CharField(max_length=64)
    object_key = models.CharField(max_length=255)
    original_filename = models.CharField(max_length=255, blank=True)
    size_bytes = models.PositiveBigIntegerField()
    schema = models.JSONField()
    profile = models.JSONField()
    row_count = models.PositiveIntegerField()
    column_count = models.PositiveIntegerField()
    parent = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.PROTECT, related_name="children"
    )
    # How a derived version was made (a retraining: the parent's rows plus which outcomes, by id range and
    # time window); {} for uploads.
    lineage = models.JSONField(default=dict, blank=True)
    # The parsed rows in Arrow IPC (datasets.columnar), read instead of the CSV; empty when the CSV could
    # not be copied exactly, and for versions stored before the copy existed.
    columnar_key = models.CharField(max_length=255, blank=True)
    columnar_sha256 = models.CharField(max_length=64, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="dataset_versions",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["dataset__name", "-version"]
        constraints = [
            models.UniqueConstraint(fields=["dataset", "version"], name="dataset_version_unique_number"),
            models.UniqueConstraint(fields=["dataset", "sha256"], name="dataset_version_unique_content"),
            models.CheckConstraint(
                condition=models.Q(version__gte=1), name="dataset_version_number_positive"
            ),
        ]
        indexes = [
            # Before deleting a content-addressed object we check that no version still points at it.
            models.Index(fields=["object_key"], name="dataset_version_object_key"),
            models.Index(fields=["-created_at"], name="dataset_version_created"),
        ]

    def __str__(self) -> str:
        return f"{self.dataset.name} v{self.version}"

    def clean(self) -> None:
        if self.parent_id is not None and self.parent.dataset_id != self.dataset_id:
            raise ValidationError({"parent": "The parent version must belong to the same dataset."})

    @property
    def target_column(self) -> str:
        return self.schema.get("target_column", "")

    @property
    def column_names(self) -> list[str]:
        return [column["name"] for column in self.schema.get("columns", [])]

    @property
    def warnings(self) -> list[str]:
        """Problems of the data that do not refuse it, such as infinite values, one sentence each."""
        found = []
        for column in self.profile.get("columns", []):
            count = column.get("stats", {}).get("inf_count")
            if count:
                found.append(
                    f"Column '{column['name']}' holds {count} infinite value{'s' if count != 1 else ''} "
                    "(inf or -inf): left out of its statistics, and read as missing values in training "
                    "(imputed for a feature; refused for a regression target)."
                )
        return found

    @property
    def columns(self) -> list[dict[str, Any]]:
        """Schema and profile of each column merged, in file order, for display."""
        profiles = {column["name"]: column for column in self.profile.get("columns", [])}
        merged = []
        for column in self.schema.get("columns", []):
            column_profile = profiles.get(column["name"], {})
            ratio = column_profile.get("missing_ratio")
            merged.append(
                {
                    **column,
                    "missing_count": column_profile.get("missing_count"),
                    "missing_ratio": ratio,
                    "missing_percent": None if ratio is None else round(ratio * 100, 1),
                    "stats": column_profile.get("stats", {}),
                    "is_target": column["name"] == self.target_column,
                }
            )
        return merged
