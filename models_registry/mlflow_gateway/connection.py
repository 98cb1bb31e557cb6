"""The lazy-import plumbing to MLflow: environment defaults, one client per tracking URI, error translation.

mlflow is imported only when a function talks to MLflow: importing it costs about a second of CPU, which
every web worker, Celery worker and manage.py command would otherwise pay at start.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import os
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

# MLflow 3 phones home from a background thread unless told not to; this app is self-hosted and offline.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
# MLflow's own defaults (7 retries with back-off, 120 s timeout) hold a request for minutes when the
# tracking server is down; the operator may still override both.
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "3")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")

from django.conf import settings

from models_registry.mlflow_gateway.errors import ModelNotFound, RegistryError, RegistryUnavailable

if TYPE_CHECKING:
    import mlflow
    from mlflow.exceptions import MlflowException

NOT_FOUND_CODES = {"RESOURCE_DOES_NOT_EXIST", "NOT_FOUND"}
# Refusals that a retry cannot fix; every other MLflow error (5xx, connection, timeouts) is transient.
_REFUSED_CODES = {
    "INVALID_PARAMETER_VALUE",
    "BAD_REQUEST",
    "MALFORMED_REQUEST",
    "INVALID_STATE",
    "RESOURCE_ALREADY_EXISTS",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "UNAUTHENTICATED",
    "CUSTOMER_UNAUTHORIZED",
    "RESOURCE_LIMIT_EXCEEDED",
}


def tracking_uri() -> str:
    return settings.MLFLOW_TRACKING_URI


def is_server(uri: str) -> bool:
    return urllib.parse.urlparse(uri).scheme in ("http", "https")


@functools.lru_cache(maxsize=16)
def _client_for(uri: str) -> mlflow.MlflowClient:
    # An explicit client per URI: the fluent API's global tracking URI would leak between threads and tests.
    import mlflow

    database = _local_database(uri)
    if database is None:
        return mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    # MLflow creates a local store's schema when it first opens it, with no lock of its own: two workers
    # starting their first training runs together on a fresh install both ran the migrations and one
    # failed with "duplicate column name". A file lock makes the second wait, then find the tables.
    database.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{database}.init-lock", "a+b") as lock, translated("opening of the tracking store"):
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
            client.search_registered_models(max_results=1)  # the registry's store opens lazily
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return client


def _local_database(uri: str) -> Path | None:
    """The file of a local SQLite store (sqlite:///relative or sqlite:////absolute), else None."""
    location = uri.removeprefix("sqlite:///").split("?", 1)[0] if uri.startswith("sqlite:///") else ""
    return Path(location) if location and location != ":memory:" else None


def client() -> mlflow.MlflowClient:
    return _client_for(tracking_uri())


def _error_for(exc: MlflowException, action: str) -> RegistryError:
    code = exc.error_code
    message = f"MLflow {action} failed: {exc.message}"
    if code in NOT_FOUND_CODES:
        return ModelNotFound(message)
    if code in _REFUSED_CODES:
        return RegistryError(message)
    return RegistryUnavailable(message)


@contextlib.contextmanager
def translated(action: str) -> Iterator[None]:
    import requests
    import sqlalchemy.exc
    from mlflow.exceptions import MlflowException

    try:
        yield
    except RegistryError:
        raise
    except MlflowException as exc:
        raise _error_for(exc, action) from exc
    except (requests.RequestException, sqlalchemy.exc.SQLAlchemyError, OSError) as exc:
        raise RegistryUnavailable(f"MLflow {action} failed: {exc}") from exc


def quoted(value: str) -> str:
    """Quote a value for an MLflow search filter, which has no escape for a single quote."""
    if "'" in value:
        raise ValueError(f"{value!r} must not contain a single quote")
    return f"'{value}'"
