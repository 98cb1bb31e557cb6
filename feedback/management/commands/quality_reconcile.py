"""manage.py quality_reconcile: rebuild the live-quality rollups from the raw rows and report differences."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from feedback import reconcile


class Command(BaseCommand):
    help = (
        "Rebuild the hourly rollups of live quality (and of prediction counts and request latencies) from "
        "the Feedback, Prediction and PredictionRequest rows, and list every difference from the kept "
        "ones. Exits 1 when any differ; with --fix, replaces the rows that differ."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--fix", action="store_true", help="Replace the rollup rows that differ.")

    def handle(self, *args: Any, fix: bool, **options: Any) -> None:
        report = reconcile.quality_reconcile(fix=fix)
        checked = ", ".join(f"{name}: {count} rows" for name, count in report.rows_checked.items())
        self.stdout.write(f"Checked {checked}.")
        for difference in report.differences[:50]:
            self.stdout.write(f"  {difference}")
        if len(report.differences) > 50:
            self.stdout.write(f"  ... and {len(report.differences) - 50} more.")
        if not report.differences:
            self.stdout.write(self.style.SUCCESS("No differences: the rollups match the raw rows."))
            return
        if report.fixed:
            self.stdout.write(self.style.WARNING(f"Fixed {len(report.differences)} rollup rows."))
            return
        raise CommandError(f"{len(report.differences)} rollup rows differ; run with --fix to replace them.")
