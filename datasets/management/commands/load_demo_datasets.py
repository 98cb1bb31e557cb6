"""Load scikit-learn's bundled breast cancer, iris and diabetes data as datasets; safe to run again."""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import pandas as pd
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser
from sklearn import datasets as sklearn_datasets

from datasets import selectors
from datasets import services as dataset_services
from mlops_site import storage


def breast_cancer_frame() -> pd.DataFrame:
    bunch = sklearn_datasets.load_breast_cancer(as_frame=True)
    frame = bunch.frame.copy()
    frame["target"] = frame["target"].map(dict(enumerate(bunch.target_names)))
    return frame


def iris_frame() -> pd.DataFrame:
    bunch = sklearn_datasets.load_iris(as_frame=True)
    frame = bunch.frame.copy()
    frame["species"] = frame.pop("target").map(dict(enumerate(bunch.target_names)))
    return frame


def diabetes_frame() -> pd.DataFrame:
    return sklearn_datasets.load_diabetes(as_frame=True).frame


DEMO_DATASETS: list[tuple[str, str, str, Callable[[], pd.DataFrame]]] = [
    (
        "breast-cancer",
        "target",
        "Wisconsin diagnostic breast cancer (scikit-learn): 30 cell-nucleus measurements; "
        "classify tumours as malignant or benign.",
        breast_cancer_frame,
    ),
    (
        "iris",
        "species",
        "Fisher's iris flowers (scikit-learn): four measurements; classify the species.",
        iris_frame,
    ),
    (
        "diabetes",
        "target",
        "Diabetes progression (scikit-learn): ten standardised baseline variables; regress disease "
        "progression one year later.",
        diabetes_frame,
    ),
]


class Command(BaseCommand):
    help = "Upload scikit-learn's breast cancer, iris and diabetes data as demo datasets (idempotent)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--user", help="Uploader's username (default: the first superuser or staff member)."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            user = selectors.uploader_get(username=options["user"])
        except get_user_model().DoesNotExist:
            raise CommandError(f"No user named {options['user']!r}.") from None
        if user is None:
            raise CommandError("No staff user exists yet: create one with `createsuperuser`, or pass --user.")
        for name, target, description, build in DEMO_DATASETS:
            content = build().to_csv(index=False).encode("utf-8")
            try:
                version, created = dataset_services.dataset_version_create(
                    name=name,
                    file=io.BytesIO(content),
                    target_column=target,
                    created_by=user,
                    description=description,
                    original_filename=f"{name}.csv",
                )
            except ValidationError as exc:
                raise CommandError(f"{name}: " + " ".join(exc.messages)) from None
            except storage.StorageError as exc:
                raise CommandError(f"Object storage is unavailable, {name} was not stored: {exc}") from None
            state = "created" if created else "already present"
            self.stdout.write(f"{name}: version {version.version} {state} ({version.row_count} rows).")
