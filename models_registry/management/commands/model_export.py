"""Export a model version as one archive (manifest, model files, lineage) for another site to import."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser

from mlops_site import storage
from models_registry import selectors, transfer


class Command(BaseCommand):
    help = (
        "Write a model version, its files and lineage to one .tar, .tar.gz or .zip archive that "
        "`manage.py model_import` on another site (staging to production) verifies and imports."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name", help="The registered model's name.")
        parser.add_argument("version", type=int, help="The version number to export.")
        parser.add_argument(
            "--output",
            required=True,
            help="The archive to write: FILE.tar, FILE.tar.gz, FILE.tgz or FILE.zip (the suffix picks it).",
        )
        parser.add_argument(
            "--with-dataset",
            action="store_true",
            help="Also carry the dataset version the model was trained on, so the other site can record it.",
        )
        parser.add_argument(
            "--force", action="store_true", help="Replace the output file when it exists already."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        output = Path(options["output"])
        try:
            kind = transfer.archive_kind_for(output.name)
        except ValidationError as exc:
            raise CommandError(exc.messages[0]) from None
        if output.exists() and not options["force"]:
            raise CommandError(f"{output} exists already; choose another name or pass --force.")
        version = (
            selectors.model_version_list(model_name=options["name"])
            .filter(version=options["version"])
            .first()
        )
        if version is None:
            raise CommandError(f"Model {options['name']!r} has no version {options['version']}.")
        folder = output.parent if str(output.parent) else Path()
        if not folder.is_dir():
            raise CommandError(f"The folder {folder} does not exist.")
        # Written beside the target and renamed at the end: a failed export leaves no partial archive.
        handle, partial = tempfile.mkstemp(prefix=f".{output.name}.", suffix=".partial", dir=folder)
        try:
            with os.fdopen(handle, "wb") as file:
                manifest = transfer.model_version_export(
                    model_version=version,
                    output=file,
                    archive_kind=kind,
                    with_dataset=options["with_dataset"],
                )
            os.replace(partial, output)
        except ValidationError as exc:
            raise CommandError("Nothing was exported: " + " ".join(exc.messages)) from None
        except storage.StorageError as exc:
            raise CommandError(f"Object storage is unavailable, nothing was exported: {exc}") from None
        except OSError as exc:
            raise CommandError(f"Cannot write {output}: {exc.strerror or exc}") from None
        finally:
            if os.path.exists(partial):
                os.unlink(partial)
        files = ", ".join(f"{name} (sha256 {entry['sha256']})" for name, entry in manifest["files"].items())
        self.stdout.write(
            f"Exported {version} (stage {version.stage}) from {manifest['source']['site_name']} to {output}: "
            f"{files}."
        )
