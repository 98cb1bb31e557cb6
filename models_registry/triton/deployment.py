"""Serving models with Triton (settings.TRITON_URL): which models are opted in, and keeping Triton in step.

A model opted in (`RegisteredModel.serve_with_triton`) has its production version loaded into Triton
through the repository API, its files sent in the load request (config as JSON, model.onnx and, for the
Python backend, model.py as base64 file overrides), so Triton needs no volume shared with the app. Triton
then serves exactly that version: any other version of the model it held is dropped by the same load.
`triton_sync` runs on commit after every promotion, rollback and opt-in change, and every minute for
every model (a restarted Triton has forgotten what it was sent); it records on the model which version
Triton serves, and the prediction path (predictions.model_cache) sends a version's rows to Triton only
when that is the version recorded, asking Triton for it by number, so a request never gets the answers
of another version.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone
from google.protobuf import json_format

from models_registry.models import RegisteredModel, Stage
from models_registry.triton import client, model_config, services
from models_registry.triton.client import TritonError, TritonUnreachable

logger = logging.getLogger(__name__)

__all__ = [
    "TritonError",
    "TritonOff",
    "TritonState",
    "TritonUnreachable",
    "triton_client",
    "triton_load_request",
    "triton_model_ids",
    "triton_serving_set",
    "triton_state",
    "triton_sync",
    "triton_sync_on_commit",
]

#: A load that crossed a promotion is repeated at most this many times (then the next sync catches up).
SYNC_ATTEMPTS = 3


class TritonOff(Exception):
    """TRITON_URL is empty: there is no Triton to serve with."""


@dataclass(frozen=True)
class SyncOutcome:
    """What a sync left: the version Triton serves (None: none) and, if it could not, why."""

    model: str
    version: int | None
    action: str  # "loaded", "unloaded", "unchanged", "refused", "off"
    error: str = ""


@dataclass(frozen=True)
class TritonState:
    """A model's Triton serving as the pages and the API show it."""

    configured: bool
    backend: str
    serve_with_triton: bool
    production_version: int | None
    triton_version: int | None
    synced_at: dt.datetime | None
    error: str

    @property
    def served_by_triton(self) -> bool:
        """Whether the API's predictions of the production version go through Triton now."""
        return (
            self.configured
            and self.serve_with_triton
            and self.production_version is not None
            and self.triton_version == self.production_version
        )


def triton_state(*, registered_model: RegisteredModel) -> TritonState:
    production = registered_model.versions.filter(stage=Stage.PRODUCTION).order_by("-version").first()
    return TritonState(
        configured=bool(settings.TRITON_URL),
        backend=settings.TRITON_BACKEND,
        serve_with_triton=registered_model.serve_with_triton,
        production_version=production.version if production else None,
        triton_version=registered_model.triton_version,
        synced_at=registered_model.triton_synced_at,
        error=registered_model.triton_error,
    )


def triton_client(*, timeout: float | None = None) -> client.Client:
    if not settings.TRITON_URL:
        raise TritonOff("TRITON_URL is not set, so no model is served with Triton.")
    return client.Client(settings.TRITON_URL, timeout=timeout or settings.TRITON_TIMEOUT_SECONDS)


def triton_load_request(files: dict[str, bytes], *, model_name: str) -> tuple[dict, dict[str, bytes]]:
    """The repository files of one model as the load API takes them: the config as JSON (the parsed
    config.pbtxt), and the other files by their path inside the model's folder."""
    prefix = f"{model_name}/"
    config_text = files[f"{prefix}config.pbtxt"].decode()
    config = json_format.MessageToDict(
        model_config.config_parse(config_text), preserving_proto_field_name=True
    )
    overrides = {
        path.removeprefix(prefix): data for path, data in files.items() if path != f"{prefix}config.pbtxt"
    }
    return config, overrides


def _record(registered: RegisteredModel, *, version: int | None, error: str) -> None:
    # update(), not save(): a sync must not write back fields someone changed meanwhile.
    RegisteredModel.objects.filter(pk=registered.pk).update(
        triton_version=version, triton_synced_at=timezone.now(), triton_error=error
    )
    registered.triton_version, registered.triton_error = version, error


def _wanted(registered: RegisteredModel):
    if not registered.serve_with_triton:
        return None
    return registered.versions.filter(stage=Stage.PRODUCTION).order_by("-version").first()


def _unload(connection: client.Client, registered: RegisteredModel) -> bool:
    """Unload the model if Triton serves it; whether it did. (Models loaded with their files in the
    request are not in Triton's repository index: their metadata says what is loaded.)"""
    if not connection.model_versions(registered.name):
        return False
    connection.unload(registered.name)
    return True


def triton_sync(*, registered_model_id: int) -> SyncOutcome:
    """Make Triton serve the model's production version if the model is opted in, and nothing of it
    otherwise; record the outcome on the model. Idempotent: a model Triton already serves right is left
    alone.

    A version Triton cannot serve (no ONNX file, a graph with no batch dimension) is recorded as the
    reason and nothing of the model stays loaded: its predictions run in-process. Raises
    TritonUnreachable, or TritonError for a 5xx answer, for the task to retry; the reason is recorded.
    """
    registered = RegisteredModel.objects.filter(pk=registered_model_id).first()
    if registered is None:
        return SyncOutcome(model="", version=None, action="unchanged")
    if not settings.TRITON_URL:
        return SyncOutcome(model=registered.name, version=None, action="off")
    connection = triton_client()
    try:
        return _sync(connection, registered)
    except (TritonUnreachable, TritonError) as exc:
        _record(registered, version=registered.triton_version, error=str(exc))
        raise


def _sync(connection: client.Client, registered: RegisteredModel) -> SyncOutcome:
    name = registered.name
    for _attempt in range(SYNC_ATTEMPTS):
        wanted = _wanted(registered)
        if wanted is None:
            unloaded = _unload(connection, registered)
            _record(registered, version=None, error="")
            return SyncOutcome(model=name, version=None, action="unloaded" if unloaded else "unchanged")
        if registered.triton_version == wanted.version and connection.model_versions(name) == [
            wanted.version
        ]:
            _record(registered, version=wanted.version, error="")
            return SyncOutcome(model=name, version=wanted.version, action="unchanged")
        try:
            files = services.triton_model_files(model_version=wanted, backend=settings.TRITON_BACKEND)
        except services.ExportRefused as exc:
            reason = " ".join(exc.messages)
            logger.warning("Triton cannot serve %s: %s", wanted, reason)
            _unload(connection, registered)
            _record(registered, version=None, error=reason)
            return SyncOutcome(model=name, version=None, action="refused", error=reason)
        config, overrides = triton_load_request(files, model_name=name)
        try:
            connection.load(name, config=config, files=overrides)
        except TritonError as exc:
            if exc.status >= 500:
                raise
            # Triton refused the model (its backend missing, the model failing to initialize): retrying
            # the same files would not help; the reason is on the model's Triton page.
            logger.error("Triton refused to load %s: %s", wanted, exc.detail)
            _record(registered, version=None, error=f"Triton refused to load {wanted}: {exc.detail}")
            return SyncOutcome(model=name, version=None, action="refused", error=exc.detail)
        registered.refresh_from_db(fields=["serve_with_triton"])
        current = _wanted(registered)
        if current is not None and current.pk == wanted.pk:
            _record(registered, version=wanted.version, error="")
            logger.info("Triton serves %s", wanted)
            return SyncOutcome(model=name, version=wanted.version, action="loaded")
        # A promotion or an opt-out committed while Triton was loading: go again with what is now wanted.
        registered.triton_version = None
    return SyncOutcome(model=name, version=registered.triton_version, action="unchanged")


def triton_sync_on_commit(*, registered_model_id: int) -> None:
    """Queue a Triton sync once the current transaction commits (nothing while TRITON_URL is empty)."""
    if not settings.TRITON_URL:
        return
    from models_registry.tasks import triton_sync_task

    # robust: a broker outage must not turn a committed transition into an error; the periodic
    # triton_sync_all_task repairs what a lost message left.
    transaction.on_commit(lambda: triton_sync_task.delay(registered_model_id), robust=True)


def triton_model_ids() -> list[int]:
    """Models Triton should serve, or was last seen serving (to unload them)."""
    return list(
        RegisteredModel.objects.filter(Q(serve_with_triton=True) | Q(triton_version__isnull=False))
        .order_by("pk")
        .values_list("pk", flat=True)
    )


def triton_serving_set(*, registered_model: RegisteredModel, enabled: bool) -> RegisteredModel:
    """Opt the model in to (or out of) serving with Triton; Triton follows once this commits."""
    with transaction.atomic():
        registered_model.serve_with_triton = enabled
        registered_model.save(update_fields=["serve_with_triton"])
        triton_sync_on_commit(registered_model_id=registered_model.pk)
    return registered_model
