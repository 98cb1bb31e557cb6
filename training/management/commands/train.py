"""Start a training run on a dataset version from the command line, optionally waiting for the result."""

from __future__ import annotations

import json
import time
from typing import Any

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.http import Http404

from datasets import selectors
from models_registry.models import ModelVersion
from training import services as training_services
from training.models import TrainingRun

POLL_SECONDS = 1.0


def _param(text: str) -> tuple[str, Any]:
    name, separator, raw = text.partition("=")
    name = name.strip()
    if not separator or not name:
        raise CommandError(f"--param {text!r} must look like name=value, for example n_estimators=100.")
    try:
        return name, json.loads(raw)
    except ValueError:
        # Bare words are text, so criterion=gini works without shell-quoted JSON quotes.
        return name, raw


class Command(BaseCommand):
    help = (
        "Queue a training run of one catalogue algorithm on a dataset version and register the result "
        "as a new model version. With --wait, wait until it succeeds or fails."
    )

    def create_parser(self, prog_name: str, subcommand: str, **kwargs: Any) -> CommandParser:
        # Django's own --version (print Django's version) gives way to the dataset version number.
        return super().create_parser(prog_name, subcommand, conflict_handler="resolve", **kwargs)

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--dataset", required=True, help="Dataset name.")
        parser.add_argument("--version", type=int, help="Dataset version number (default: the latest).")
        parser.add_argument("--model", required=True, help="Registered model name (created on first use).")
        parser.add_argument(
            "--algorithm",
            required=True,
            help="logistic_regression, random_forest, hist_gradient_boosting (classification); "
            "ridge, random_forest, hist_gradient_boosting (regression).",
        )
        parser.add_argument("--target", help="Target column (default: the dataset version's target).")
        parser.add_argument("--task", choices=["classification", "regression"], help="Default: inferred.")
        parser.add_argument(
            "--param",
            action="append",
            default=[],
            metavar="NAME=JSON",
            help="A hyperparameter as name=JSON value, e.g. max_depth=5 or class_weight=null; repeatable. "
            "A value that is not JSON is taken as text.",
        )
        parser.add_argument("--seed", type=int, default=42, help="Seed of the split and the estimator.")
        parser.add_argument("--test-size", type=float, default=0.2, help="Holdout fraction (default 0.2).")
        parser.add_argument(
            "--user", help="Username recorded as the run's creator (default: first superuser)."
        )
        parser.add_argument("--wait", action="store_true", help="Wait for the run to finish.")
        parser.add_argument(
            "--timeout",
            type=float,
            default=3600,
            help="Seconds --wait waits before giving up (default 3600).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        params: dict[str, Any] = {}
        for text in options["param"]:
            name, value = _param(text)
            if name in params:
                raise CommandError(f"--param {name} is given twice.")
            params[name] = value
        try:
            user = selectors.uploader_get(username=options["user"])
        except get_user_model().DoesNotExist:
            raise CommandError(f"No user named {options['user']!r}.") from None
        dataset_version = self._dataset_version(options["dataset"], options["version"])
        try:
            run = training_services.training_run_create(
                dataset_version=dataset_version,
                model_name=options["model"],
                algorithm=options["algorithm"],
                params=params,
                created_by=user,
                target_column=options["target"],
                task=options["task"],
                seed=options["seed"],
                test_size=options["test_size"],
            )
        except ValidationError as exc:
            raise CommandError(
                "The run was not queued:\n" + "\n".join(f"- {m}" for m in exc.messages)
            ) from None
        self.stdout.write(
            f"Queued training run {run.pk} of model {run.model_name} on {dataset_version} "
            f"({run.algorithm}, seed {run.seed})."
        )
        if options["wait"]:
            self._wait(run, timeout=options["timeout"])

    def _dataset_version(self, name: str, number: int | None) -> Any:
        try:
            if number is not None:
                return selectors.dataset_version_get(dataset_name=name, version=number)
        except Http404 as exc:
            raise CommandError(str(exc)) from None
        latest = selectors.dataset_version_list(dataset_name=name).first()
        if latest is None:
            raise CommandError(f"There is no dataset named {name!r} (or it has no versions).")
        return latest

    def _wait(self, run: TrainingRun, *, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        shown = ""
        while True:
            run.refresh_from_db()
            line = f"{run.progress}% {run.progress_message}"
            if line != shown and not run.is_terminal:
                self.stdout.write(f"  {line}")
                shown = line
            if run.is_terminal:
                break
            if time.monotonic() >= deadline:
                raise CommandError(
                    f"Training run {run.pk} is still {run.status} after {timeout:g} s; "
                    "is a Celery worker running? The run continues when one picks it up."
                )
            time.sleep(POLL_SECONDS)
        if run.status == TrainingRun.Status.FAILED:
            raise CommandError(f"Training run {run.pk} failed: {run.error_message}")
        version = ModelVersion.objects.get(training_run=run)
        metrics = ", ".join(f"{name} {value:.4g}" for name, value in sorted(version.metrics.items()))
        duration = f" in {run.duration.total_seconds():.1f} s" if run.duration else ""
        self.stdout.write(
            self.style.SUCCESS(
                f"Training run {run.pk} succeeded{duration}: {version.registered_model.name} version "
                f"{version.version} (MLflow version {version.mlflow_version}). Holdout: {metrics}. "
                f"ONNX: {version.onnx_status}."
            )
        )
