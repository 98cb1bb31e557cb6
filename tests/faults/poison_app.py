"""The site's Celery app for a worker whose pool child kills itself on every batch job named poison*.csv."""

from __future__ import annotations

import os
import signal
from typing import Any

from celery import signals

from mlops_site.celery import app

__all__ = ("app",)


@signals.worker_process_init.connect
def _poison(**kwargs: Any) -> None:
    from predictions.batch import services

    real_run = services._run

    def run(attempt: Any) -> None:
        if attempt.job.original_filename.startswith("poison"):
            os.kill(os.getpid(), signal.SIGKILL)
        real_run(attempt)

    services._run = run
