"""Import a model version archive made by `manage.py model_export` on another site."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser

from datasets import selectors as dataset_selectors
from mlops_site import storage
from models_registry import mlflow_gateway, transfer


class Command(BaseCommand):
    help = (
        "Verify a model version archive (members, sizes, sha256, manifest, model files) and record it as "
        "the next version of its model, in stage none; importing the same archive again changes nothing."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("path", help="The archive (.tar, .tar.gz, .tgz or .zip) to import.")
        parser.add_argument("--name", help="Import under this model name instead of the source's.")
        parser.add_argument(
            "--user", help="Username recorded as importer (default: the first superuser or staff member)."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        path = Path(options["path"])
        try:
            user = dataset_selectors.uploader_get(username=options["user"])
        except get_user_model().DoesNotExist:
            raise CommandError(f"No user named {options['user']!r}.") from None
        try:
            with path.open("rb") as archive:
                result = transfer.model_version_import(archive=archive, created_by=user, name=options["name"])
        except OSError as exc:
            raise CommandError(f"Cannot read {path}: {exc.strerror or exc}") from None
        except ValidationError as exc:
            raise CommandError("\n".join(f"- {message}" for message in exc.messages)) from None
        except storage.StorageError as exc:
            raise CommandError(f"Object storage is unavailable, nothing was imported: {exc}") from None
        except mlflow_gateway.RegistryError as exc:
            raise CommandError(f"MLflow refused the registration, nothing was imported: {exc}") from None
        version = result.model_version
        if not result.created:
            self.stdout.write(
                f"Unchanged: this archive is already {version} (stage {version.stage}); nothing was imported."
            )
            return
        dataset = result.dataset_version
        if dataset is None:
            lineage = "no dataset version recorded here (its sha256 is kept in the lineage)"
        else:
            how = "created" if result.dataset_created else "linked"
            lineage = f"dataset {dataset.dataset.name} v{dataset.version} {how}"
        self.stdout.write(
            f"Imported {version} in stage none; {lineage}. Checksums verified: "
            f"{', '.join(filter(None, [version.skops_sha256, version.onnx_sha256]))}. "
            "Promote it with the usual quality gate when it is wanted."
        )
