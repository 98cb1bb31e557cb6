"""A throwaway embedded site for the benchmarks that run the services in their own process."""

from __future__ import annotations

import os
from pathlib import Path

#: Variables that would send the benchmark to outside systems.
SERVERS = ("DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL", "AWS_STORAGE_BUCKET_NAME", "MLFLOW_TRACKING_URI")


def django_configure(data_dir: Path) -> None:
    """The embedded default in `data_dir` (SQLite, local files, a local MLflow store), Celery tasks run in
    this process, and the database migrated."""
    for name in SERVERS:
        os.environ.pop(name, None)
    os.environ.update(
        {
            "DJANGO_SETTINGS_MODULE": "mlops_site.settings",
            "DATA_DIR": str(data_dir),
            "SECRET_KEY": "benchmark-only-secret-key-0123456789abcdef",
            "DEBUG": "False",
            "CELERY_TASK_ALWAYS_EAGER": "True",
            "LOG_LEVEL": "WARNING",
        }
    )
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0)
