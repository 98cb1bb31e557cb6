"""The model registry in MLflow: registering a run's model as a version, deleting versions, aliases."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from models_registry.mlflow_gateway import connection
from models_registry.mlflow_gateway.errors import ModelNotFound, RegistryError, RegistryUnavailable
from models_registry.mlflow_gateway.runs import MODEL_ID_TAG, LoggedRun

if TYPE_CHECKING:
    import mlflow

logger = logging.getLogger(__name__)


def model_register(
    *,
    name: str,
    run_id: str,
    tags: Mapping[str, Any] | None = None,
    wait_seconds: int = 60,
    logged: LoggedRun | None = None,
) -> int:
    """Register the model logged by `run_id` under `name` and return the MLflow version number.

    Idempotent: a READY version of `name` from this run is returned instead of registering again.
    A version that does not become READY is deleted, so a failure leaves no half-registered version.
    `logged`, what training_run_log returned for this run, spares looking the run and its model up.
    """
    client = connection.client()
    fresh = bool(logged and logged.run_id == run_id and logged.model_id and logged.model_source)
    with connection.translated(f"registration of run {run_id!r} as {name!r}"):
        # A run training_run_log has just created has no version yet: only an older one may.
        existing = (
            []
            if fresh
            else client.search_model_versions(
                f"name = {connection.quoted(name)} and run_id = {connection.quoted(run_id)}"
            )
        )
        for version in sorted(existing, key=lambda mv: int(mv.version)):
            if version.status == "PENDING_REGISTRATION":
                version = _version_wait(client, name=name, version=version.version, wait_seconds=wait_seconds)
            if version.status == "READY":
                return int(version.version)
            client.delete_model_version(name, version.version)

        if fresh:
            model_id, source = logged.model_id, logged.model_source
        else:
            model_id, source = _finished_run_model(client, run_id=run_id)
        created = _version_create(
            client, name=name, source=source, run_id=run_id, tags=tags, model_id=model_id
        )
    try:
        with connection.translated(f"registration of run {run_id!r} as {name!r}"):
            ready = created
            if created.status != "READY":
                ready = _version_wait(client, name=name, version=created.version, wait_seconds=wait_seconds)
            if ready.status != "READY":
                raise RegistryUnavailable(
                    f"model {name!r} version {created.version} ended as {ready.status}: "
                    f"{ready.status_message}"
                )
    except BaseException:
        with contextlib.suppress(Exception):
            client.delete_model_version(name, created.version)
        raise
    logger.info("registered run %s as model %s version %s", run_id, name, created.version)
    return int(created.version)


def _version_create(
    client: mlflow.MlflowClient,
    *,
    name: str,
    source: str,
    run_id: str,
    tags: Mapping[str, Any] | None,
    model_id: str | None,
) -> Any:
    """A new version of `name`, creating the registered model when it is the first (the rare case: the
    version is tried first, which spares a refused create on every later registration)."""
    from mlflow.exceptions import MlflowException

    def create() -> Any:
        # The storage location, not models:/<id>: a SQL registry resolves that through the global client.
        return client.create_model_version(
            name, source, run_id=run_id, tags=dict(tags or {}), model_id=model_id, await_creation_for=0
        )

    try:
        return create()
    except MlflowException as exc:
        if exc.error_code not in connection.NOT_FOUND_CODES:
            raise
    try:
        client.create_registered_model(name)
    except MlflowException as exc:
        if exc.error_code not in ("RESOURCE_ALREADY_EXISTS", "ALREADY_EXISTS"):
            raise
    return create()


def _finished_run_model(client: mlflow.MlflowClient, *, run_id: str) -> tuple[str, str]:
    """The id and location of the model a FINISHED run logged."""
    run = client.get_run(run_id)
    if run.info.status != "FINISHED":
        raise RegistryError(f"run {run_id} is {run.info.status}, not FINISHED: its model may be incomplete")
    model_id = run.data.tags.get(MODEL_ID_TAG)
    if not model_id:
        raise ModelNotFound(f"run {run_id} logged no model")
    return model_id, client.get_logged_model(model_id).artifact_location


def _version_wait(client: mlflow.MlflowClient, *, name: str, version: str, wait_seconds: int) -> Any:
    deadline = time.monotonic() + wait_seconds
    current = client.get_model_version(name, version)
    while current.status == "PENDING_REGISTRATION":
        if time.monotonic() > deadline:
            raise RegistryUnavailable(f"model {name!r} version {version} was not READY after {wait_seconds}s")
        time.sleep(0.5)
        current = client.get_model_version(name, version)
    return current


def model_version_delete(*, name: str, version: int) -> None:
    """Delete the version (its aliases go with it); deleting a missing version does nothing."""
    with contextlib.suppress(ModelNotFound), connection.translated(f"deletion of {name!r} version {version}"):
        connection.client().delete_model_version(name, str(version))


def registered_model_delete_if_empty(*, name: str) -> bool:
    """Delete the registered model `name` when it holds no version; returns whether it was deleted.

    MLflow deletes a registered model together with its versions, so one with any version is left alone.
    A missing model is not an error.
    """
    from mlflow.exceptions import MlflowException

    client = connection.client()
    with connection.translated(f"deletion of model {name!r}"):
        try:
            if client.search_model_versions(f"name = {connection.quoted(name)}", max_results=1):
                return False
            client.delete_registered_model(name)
        except MlflowException as exc:
            if exc.error_code in connection.NOT_FOUND_CODES:
                return False
            raise
    logger.info("deleted model %s, which had no versions, from MLflow's registry", name)
    return True


#: Tries of an alias update that lost a race with a concurrent update of the same alias.
ALIAS_ATTEMPTS = 4
# How the store words a refused duplicate row (SQLite, PostgreSQL, MySQL), also through a tracking server.
_DUPLICATE_WORDS = ("UNIQUE constraint failed", "duplicate key value", "Duplicate entry")


def _is_duplicate(exc: BaseException) -> bool:
    """Whether exc (or its cause) is a unique-constraint refusal: another writer inserted the row first."""
    import sqlalchemy.exc

    while exc is not None:
        if isinstance(exc, sqlalchemy.exc.IntegrityError) or any(w in str(exc) for w in _DUPLICATE_WORDS):
            return True
        exc = exc.__cause__  # type: ignore[assignment]
    return False


def _alias_update(action: str, update: Any) -> None:
    """Run an alias update, again when it lost a race: MLflow checks for the alias row, then inserts it,
    so two updates at once can both insert and one is refused as a duplicate. That is no outage: the
    retry finds the row and updates it."""
    for attempt in range(1, ALIAS_ATTEMPTS + 1):
        try:
            with connection.translated(action):
                update()
            return
        except RegistryError as exc:
            if attempt == ALIAS_ATTEMPTS or not _is_duplicate(exc):
                raise
            logger.info("MLflow %s collided with a concurrent update; retrying", action)
            time.sleep(0.05 * attempt)


def alias_set(*, name: str, alias: str, version: int) -> None:
    """Point the alias at the version, moving it away from whichever version held it."""
    _alias_update(
        f"setting alias {alias!r} of {name!r} to version {version}",
        lambda: connection.client().set_registered_model_alias(name, alias, str(version)),
    )


def alias_delete(*, name: str, alias: str) -> None:
    """Remove the alias; removing an alias that is not set does nothing."""
    _alias_update(
        f"removing alias {alias!r} of {name!r}",
        lambda: connection.client().delete_registered_model_alias(name, alias),
    )


def aliases_get(*, name: str) -> dict[str, int]:
    with connection.translated(f"lookup of model {name!r}"):
        registered = connection.client().get_registered_model(name)
    return {alias: int(version) for alias, version in registered.aliases.items()}
