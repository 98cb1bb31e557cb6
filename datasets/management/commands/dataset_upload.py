"""Upload a CSV file as a dataset version from the command line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser

from datasets import selectors
from datasets import services as dataset_services
from mlops_site import storage


class Command(BaseCommand):
    help = "Store a CSV file as a new dataset, or as the next version of an existing one."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("path", help="The CSV file to upload.")
        parser.add_argument("--name", required=True, help="Dataset name (new or existing).")
        parser.add_argument("--target", help="Target column; required for a new dataset.")
        parser.add_argument("--description", default="", help="Description, used when the dataset has none.")
        parser.add_argument(
            "--parent-version", type=int, help="Version of the same dataset this file derives from."
        )
        parser.add_argument(
            "--user", help="Username recorded as uploader (default: the first superuser or staff member)."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        path = Path(options["path"])
        try:
            user = selectors.uploader_get(username=options["user"])
        except get_user_model().DoesNotExist:
            raise CommandError(f"No user named {options['user']!r}.") from None
        try:
            with path.open("rb") as handle:
                version, created = dataset_services.dataset_version_create(
                    name=options["name"],
                    file=handle,
                    target_column=options["target"],
                    created_by=user,
                    description=options["description"],
                    parent=options["parent_version"],
                    original_filename=path.name,
                )
        except OSError as exc:
            raise CommandError(f"Cannot read {path}: {exc.strerror or exc}") from None
        except ValidationError as exc:
            raise CommandError(
                "The file was not stored:\n" + "\n".join(f"- {m}" for m in exc.messages)
            ) from None
        except storage.StorageError as exc:
            raise CommandError(f"Object storage is unavailable, nothing was stored: {exc}") from None
        if created:
            self.stdout.write(
                f"Created version {version.version} of dataset {version.dataset.name} "
                f"({version.row_count} rows, {version.column_count} columns, sha256 {version.sha256})."
            )
        else:
            self.stdout.write(
                f"Unchanged: version {version.version} of dataset {version.dataset.name} already holds "
                f"this file (sha256 {version.sha256})."
            )
