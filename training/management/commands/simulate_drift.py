"""Stream synthetic traffic whose concept drifts through the API and watch the closed loop react."""

from __future__ import annotations

import json
import uuid
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from mlops_site.celery import app
from training import simulation


class Command(BaseCommand):
    help = (
        "Create a model on synthetic data, stream predictions and their true outcomes through the API, "
        "shift the concept at a chosen row, and print the timeline of the closed loop: live accuracy, the "
        "trigger, the challenger's figures and its promotion. Retrainings and shadow batches run on the "
        "Celery worker (start one, e.g. with `make run`), or in this process with --inline."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--scenario", choices=sorted(simulation.SCENARIOS), default="concept")
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument(
            "--rows", type=int, default=1200, help="Predictions to send in all (default 1200)."
        )
        parser.add_argument("--drift-at", type=int, default=400, help="Row at which the drift starts.")
        parser.add_argument("--step", type=int, default=25, help="Rows per request (and per beat pass).")
        parser.add_argument(
            "--rate",
            type=float,
            default=0.0,
            help="Rows per second to send at (default: as fast as it answers).",
        )
        parser.add_argument("--model", default="", help="Name of the new model (default drift-<scenario>-…).")
        parser.add_argument("--timeout", type=float, default=300, help="Seconds to wait for the worker.")
        parser.add_argument("--inline", action="store_true", help="Run the worker's tasks in this process.")
        parser.add_argument("--json", action="store_true", help="Print the result as JSON at the end.")

    def handle(self, *args: Any, **options: Any) -> None:
        for name in ("rows", "step"):
            if options[name] < 1:
                raise CommandError(f"--{name.replace('_', '-')} must be at least 1.")
        if not 0 <= options["rate"] <= 1_000_000:
            raise CommandError(
                "--rate must be from 0 (as fast as the site answers) to 1,000,000 rows per second."
            )
        if options["inline"]:
            app.conf.task_always_eager = True
        model = options["model"] or f"drift-{options['scenario']}-{uuid.uuid4().hex[:6]}"
        try:
            run = simulation.Simulation(
                scenario=simulation.SCENARIOS[options["scenario"]],
                seed=options["seed"],
                model=model,
                rows=options["rows"],
                drift_at=options["drift_at"],
                step=options["step"],
                timeout=options["timeout"],
                out=self.stdout.write,
                rate=options["rate"],
            )
            result = run.run()
        except simulation.SimulationError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(self._summary(result))
        if options["json"]:
            self.stdout.write(json.dumps(result.as_dict(), indent=2, default=str))

    @staticmethod
    def _summary(result: simulation.SimulationResult) -> str:
        def rows(value: int | None) -> str:
            return "never" if value is None else f"{value} feedback rows after the drift"

        def share(value: float | None) -> str:
            return "—" if value is None else f"{value:.3f}"

        return (
            f"\n{result.model} ({result.scenario}, seed {result.seed}, {result.seconds:.0f} s): "
            f"accuracy before the drift {share(result.accuracy_before)}, "
            f"lowest {share(result.accuracy_lowest)}, "
            f"at the end {share(result.accuracy_after)}; trigger: {rows(result.rows_to_trigger)}; "
            f"promotion: {rows(result.rows_to_promotion)}; recovery: {rows(result.rows_to_recovery)}; "
            f"{result.retrainings} retrainings, {result.promotions} promotions, {result.rollbacks} rollbacks."
        )
