"""The PostgreSQL a benchmark runs on: DATABASE_URL when given, else a throwaway server."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def postgres(name: str) -> Iterator[str]:
    """DATABASE_URL as given, else a throwaway PostgreSQL started as deploy/test_services.py starts it
    (loopback only) and stopped at the end; yields a line saying which."""
    if os.environ.get("DATABASE_URL"):
        yield "DATABASE_URL from the environment"
        return
    from deploy import test_services

    root = Path(tempfile.mkdtemp(prefix=f"bench-{name}-pg-"))
    services = test_services.Services(root)
    try:
        try:
            started = services.start_postgres()
        except test_services.ServiceUnavailable as exc:
            raise SystemExit(f"this benchmark needs PostgreSQL: {exc}") from None
        os.environ["DATABASE_URL"] = services.env["DATABASE_URL"]
        yield started
    finally:
        with contextlib.suppress(Exception):
            from django.db import connections

            connections.close_all()
        services.stop_all()
        os.environ.pop("DATABASE_URL", None)
        shutil.rmtree(root, ignore_errors=True)
