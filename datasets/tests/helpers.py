"""Builders shared by the dataset tests: CSV contents and an upload through the service."""

from __future__ import annotations

import hashlib
import io
import uuid
from typing import Any

from django.contrib.auth.models import AbstractBaseUser

from datasets import services as dataset_services
from datasets.models import DatasetVersion
from mlops_site import storage
from tests.factories import make_classification_frame, make_csv_bytes


def unique_csv(rows: int = 20) -> bytes:
    """A valid CSV file whose bytes no other test produces, so a shared S3 bucket cannot already hold it."""
    return make_csv_bytes(make_classification_frame(rows, seed=uuid.uuid4().int % 2**32))


def upload(
    content: bytes,
    *,
    name: str = "churn",
    target: str | None = "label",
    user: AbstractBaseUser | None = None,
    **kwargs: Any,
) -> tuple[DatasetVersion, bool]:
    return dataset_services.dataset_version_create(
        name=name,
        file=io.BytesIO(content),
        target_column=target,
        created_by=user,
        original_filename=kwargs.pop("original_filename", "data.csv"),
        **kwargs,
    )


def object_key_of(content: bytes) -> str:
    return dataset_services.dataset_object_key(sha256=hashlib.sha256(content).hexdigest())


def is_stored(content: bytes) -> bool:
    return storage.exists(object_key_of(content))
