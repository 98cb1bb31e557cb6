"""manage.py demo_model: queue the demo model's training once per site (make run calls it on start)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from training import demo_services


class Command(BaseCommand):
    help = (
        f"Queue the training of the demo model {demo_services.DEMO_MODEL_NAME!r} on the demo breast cancer "
        "data; the worker trains it and puts it in production. Once per site: does nothing (and says why) "
        "when it was started before, even if staff removed it since."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            run = demo_services.demo_model_start()
        except demo_services.DemoNotStarted as reason:
            self.stdout.write(f"No demo model queued: {reason}")
            return
        self.stdout.write(
            f"Demo model {demo_services.DEMO_MODEL_NAME}: training run {run.pk} queued; the worker trains "
            "it and puts it in production within a minute."
        )
