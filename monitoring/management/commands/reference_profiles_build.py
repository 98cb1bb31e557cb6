"""Build the drift reference profile of every version trained before profiles were made at training."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from ml.errors import ArtifactError, TrainingInputError
from mlops_site import storage
from monitoring import drift_selectors, drift_services


class Command(BaseCommand):
    help = (
        "Build the missing reference profiles (training rows binned per feature, holdout outputs) from each "
        "version's dataset and seeded split, so drift reports cover versions trained before them."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--model", help="Only the versions of this registered model.")

    def handle(self, *args: Any, **options: Any) -> None:
        built = failed = 0
        for version in drift_selectors.versions_without_profile(model_name=options.get("model")):
            try:
                stored = drift_services.reference_profile_rebuild(model_version=version)
            except (
                TrainingInputError,
                ArtifactError,
                storage.StorageError,
                OSError,
                ValueError,
                KeyError,
            ) as exc:
                # One unreadable dataset or model must not stop the others.
                failed += 1
                self.stderr.write(f"{version}: no profile: {type(exc).__name__}: {exc}")
                continue
            built += stored
            self.stdout.write(f"{version}: {'profile built' if stored else 'skipped'}")
        self.stdout.write(f"Built {built} reference profile(s); {failed} failed.")
