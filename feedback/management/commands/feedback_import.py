"""Import a CSV file of true outcomes from the command line, waiting for the worker unless told not to."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.urls import reverse

from feedback import selectors
from feedback.imports import services as import_services
from feedback.models import FeedbackImport
from mlops_site import storage

POLL_SECONDS = 1.0


class Command(BaseCommand):
    help = (
        "Import true outcomes from a CSV file (prediction_id, key or batch_job and row; true_label or "
        "true_value; optionally correct and comment) as a staff member, and wait for the worker to store it."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("path", help="The CSV file.")
        parser.add_argument(
            "--model",
            help="Registered model name: required for a file of keys; else rows of other models are refused.",
        )
        parser.add_argument("--user", required=True, help="Username of the staff member importing the file.")
        parser.add_argument("--no-wait", action="store_true", help="Queue the import and return at once.")
        parser.add_argument(
            "--timeout", type=float, default=3600, help="Seconds to wait for the import (default 3600)."
        )
        parser.add_argument("--errors", type=Path, help="Write the errors file here, if a row was refused.")

    def handle(self, *args: Any, **options: Any) -> None:
        path = Path(options["path"])
        try:
            user = get_user_model().objects.get(**{get_user_model().USERNAME_FIELD: options["user"]})
        except get_user_model().DoesNotExist:
            raise CommandError(f"No user named {options['user']!r}.") from None
        try:
            with path.open("rb") as handle:
                job = import_services.feedback_import_start(
                    user=user, file=handle, filename=path.name, registered_model_name=options["model"]
                )
        except OSError as exc:
            raise CommandError(f"Cannot read {path}: {exc.strerror or exc}") from None
        except PermissionDenied as exc:
            raise CommandError(str(exc)) from None
        except import_services.FeedbackImportInvalid as exc:
            raise CommandError(
                "The file was refused; nothing was stored:\n" + "\n".join(f"- {m}" for m in exc.problems)
            ) from None
        except storage.StorageError as exc:
            raise CommandError(f"Object storage is unavailable, nothing was stored: {exc}") from None
        self.stdout.write(
            f"Queued feedback import {job.uuid} of {path.name} (about {job.rows_total} rows); "
            f"its page: {reverse('feedback:import-detail', args=[job.uuid])}"
        )
        if options["no_wait"]:
            return
        job = self._wait(user, job, timeout=options["timeout"])
        self._report(job, errors_path=options["errors"])

    def _wait(self, user: Any, job: FeedbackImport, *, timeout: float) -> FeedbackImport:
        deadline = time.monotonic() + timeout
        shown = ""
        while True:
            job = selectors.feedback_import_get(user=user, import_uuid=job.uuid)
            line = (
                f"{job.progress}% ({job.rows_done} of about {job.rows_total} rows, {job.rows_failed} refused)"
            )
            if line != shown and not job.is_terminal:
                self.stdout.write(f"  {line}")
                shown = line
            if job.is_terminal:
                return job
            if time.monotonic() >= deadline:
                raise CommandError(
                    f"Feedback import {job.uuid} is still {job.status} after {timeout:g} s; is a Celery "
                    "worker running? The import continues when one picks it up."
                )
            time.sleep(POLL_SECONDS)

    def _report(self, job: FeedbackImport, *, errors_path: Path | None) -> None:
        counts = (
            f"{job.rows_done} rows: {job.rows_created} created, {job.rows_updated} updated, "
            f"{job.rows_unchanged} unchanged, {job.rows_failed} refused"
        )
        if job.status == FeedbackImport.Status.FAILED:
            raise CommandError(f"Feedback import {job.uuid} failed after {counts}: {job.error_message}")
        self.stdout.write(self.style.SUCCESS(f"Feedback import {job.uuid} succeeded: {counts}."))
        if not import_services.errors_file_ready(job):
            return
        self.stdout.write(f"Errors file: {reverse('feedback:import-errors', args=[job.uuid])}")
        if errors_path is not None:
            with errors_path.open("wb") as out:
                for block in storage.iter_chunks(job.errors_key):
                    out.write(block)
            self.stdout.write(f"Wrote the errors file to {errors_path}.")
