"""Per-process caches: loaded predictors keyed by model version, and stage lookups kept at most 0.5 s.

With TRITON_URL set, a version Triton serves (its model opted in, and the version the last Triton sync
recorded; see models_registry.triton.deployment) is predicted through Triton: a TritonPredictor, which
falls back to the in-process session when Triton fails.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db.models.signals import post_save

from ml import predictor as predictor_module
from ml.errors import ArtifactError
from mlops_site import storage
from models_registry.triton import client as triton_client
from models_registry.triton import model_config as triton_model_config
from monitoring import prometheus

logger = logging.getLogger(__name__)

#: Loaded models kept per process; the least recently used one is dropped beyond this.
MAX_LOADED_MODELS = 16
#: Seconds this process reuses the answer to "which version is in production (or staging) now?".
#: A promotion or rollback made in another process is therefore seen within this time (plus the first load
#: of the new version); one made in this process is seen at once (see version_saved).
RESOLUTION_TTL_SECONDS = 0.5
MAX_RESOLUTIONS = 1024
#: The resolutions' key of a model's challenger (the newest staging version, or None).
CHALLENGER = "challenger"

#: Seconds a process stops asking Triton after it failed (each request meanwhile runs in-process).
TRITON_RETRY_AFTER_SECONDS = 10.0

Predictor = (
    predictor_module.SklearnPredictor | predictor_module.OnnxPredictor | predictor_module.TritonPredictor
)


class ModelUnavailable(Exception):
    """The version's model file is missing or damaged, so it cannot predict; the message says which."""


@dataclass(frozen=True)
class ModelArtifacts:
    """What loading one version needs: its id, schema, classes and artifact keys with their checksums."""

    version_id: int
    label: str
    feature_schema: list[dict[str, Any]]
    classes: list[Any] | None
    skops_key: str = ""
    skops_sha256: str = ""
    onnx_key: str = ""
    onnx_sha256: str = ""
    onnx_available: bool = False
    # Set when Triton serves this version: the model's name there, and the version to ask it for.
    triton_model: str = ""
    triton_version: int | None = None

    @classmethod
    def of_version(cls, version: Any) -> ModelArtifacts:
        """From a models_registry ModelVersion (with registered_model joined)."""
        registered = version.registered_model
        by_triton = bool(
            settings.TRITON_URL
            and registered.serve_with_triton
            and registered.triton_version == version.version
            and version.has_onnx
        )
        return cls(
            version_id=version.pk,
            label=f"{version.registered_model.name} v{version.version}",
            feature_schema=version.feature_schema,
            classes=version.classes,
            skops_key=version.skops_key,
            skops_sha256=version.skops_sha256,
            onnx_key=version.onnx_key,
            onnx_sha256=version.onnx_sha256,
            onnx_available=version.has_onnx,
            triton_model=registered.name if by_triton else "",
            triton_version=version.version if by_triton else None,
        )

    @property
    def cache_key(self) -> tuple[int, str, str, str]:
        # The checksums make the key safe even if an id were reused (test databases roll back sequences).
        # Triton's address is part of it: a version Triton starts or stops serving is loaded anew.
        onnx = self.onnx_sha256 if self.onnx_available else ""
        return (self.version_id, onnx, self.skops_sha256, settings.TRITON_URL if self.triton_model else "")


def _read(key: str, label: str, kind: str) -> bytes:
    data = storage.read_bytes(key)
    if data is None:
        raise ModelUnavailable(f"The {kind} file of {label} is missing from storage ({key}).")
    return data


def _triton_fallback(artifacts: ModelArtifacts) -> Callable[[Exception | None], None]:
    """What a TritonPredictor does when it answers in-process: log the failure, count every request."""
    model = artifacts.triton_model

    def fallback(exc: Exception | None) -> None:
        if exc is None:
            reason = "paused"
        elif isinstance(exc, triton_client.TritonError):
            reason = "error"
        else:
            reason = "unreachable"
        if exc is not None:
            logger.warning(
                "%s: Triton failed (%s); answering in-process, Triton is asked again in %.0f s",
                artifacts.label,
                exc,
                TRITON_RETRY_AFTER_SECONDS,
            )
        prometheus.triton_fallback_count(model=model, reason=reason)

    return fallback


def _triton_predictor(artifacts: ModelArtifacts, onnx_bytes: bytes) -> Predictor:
    connection = triton_client.Client(settings.TRITON_URL, timeout=settings.TRITON_TIMEOUT_SECONDS)
    model, version = artifacts.triton_model, artifacts.triton_version

    def infer(inputs: dict[str, Any], outputs: list[str]) -> dict[str, Any]:
        return connection.infer(model, inputs, version=version, outputs=outputs, binary=True)

    return predictor_module.TritonPredictor(
        onnx_bytes,
        sha256=artifacts.onnx_sha256,
        feature_schema=artifacts.feature_schema,
        classes=artifacts.classes,
        infer=infer,
        on_fallback=_triton_fallback(artifacts),
        retry_after=TRITON_RETRY_AFTER_SECONDS,
        # triton_sync loads every model with the export's default batch limit.
        max_rows=triton_model_config.DEFAULT_MAX_BATCH_SIZE,
    )


def predictor_load(artifacts: ModelArtifacts) -> Predictor:
    """Read, verify and open the model: onnxruntime when a verified ONNX exists, else scikit-learn (skops);
    through Triton when it serves the version (the in-process session kept as its fallback).

    A damaged or missing ONNX file falls back to the skops file when there is one. StorageError propagates:
    an outage is not a property of the model.
    """
    label = artifacts.label
    if artifacts.onnx_available and artifacts.onnx_key:
        try:
            onnx_bytes = _read(artifacts.onnx_key, label, "ONNX")
            if artifacts.triton_model:
                return _triton_predictor(artifacts, onnx_bytes)
            return predictor_module.predictor_from_artifacts(
                feature_schema=artifacts.feature_schema,
                onnx_bytes=onnx_bytes,
                onnx_sha256=artifacts.onnx_sha256,
                classes=artifacts.classes,
            )
        except (ArtifactError, ModelUnavailable) as exc:
            if not artifacts.skops_key:
                raise ModelUnavailable(f"{label} cannot predict: {exc}") from exc
            logger.warning("%s: ONNX model unusable (%s); using the skops model", label, exc)
    if not artifacts.skops_key:
        raise ModelUnavailable(f"{label} has no model file to predict with.")
    try:
        return predictor_module.predictor_from_artifacts(
            feature_schema=artifacts.feature_schema,
            skops_bytes=_read(artifacts.skops_key, label, "skops"),
            skops_sha256=artifacts.skops_sha256,
        )
    except ArtifactError as exc:
        raise ModelUnavailable(f"{label} cannot predict: {exc}") from exc


class PredictorCache:
    """A bounded LRU of predictors; concurrent first requests for one version load it once."""

    def __init__(self, *, max_size: int = MAX_LOADED_MODELS) -> None:
        self.max_size = max_size
        self.loads = 0
        self._entries: OrderedDict[tuple[int, str, str], Predictor] = OrderedDict()
        self._lock = threading.Lock()
        self._loading: dict[tuple[int, str, str], threading.Lock] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, artifacts: ModelArtifacts) -> bool:
        return artifacts.cache_key in self._entries

    def get(self, artifacts: ModelArtifacts) -> Predictor:
        key = artifacts.cache_key
        with self._lock:
            found = self._entries.get(key)
            if found is not None:
                self._entries.move_to_end(key)
                return found
            key_lock = self._loading.setdefault(key, threading.Lock())
        # Loading takes a while (reading from S3, opening a session): only this version's requests wait.
        with key_lock:
            with self._lock:
                found = self._entries.get(key)
            if found is not None:
                return found
            loaded = predictor_load(artifacts)
            with self._lock:
                self.loads += 1
                self._entries[key] = loaded
                self._entries.move_to_end(key)
                while len(self._entries) > self.max_size:
                    self._entries.popitem(last=False)
                self._loading.pop(key, None)
            return loaded

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._loading.clear()
            self.loads = 0


class VersionResolutions:
    """Resolved versions by (model name, pinned version or stage), each reused for at most `ttl` seconds.

    Saves the version query (most of a single-row request's own time) on busy models. Failed lookups
    (404, 409) are not kept, so a newly registered or promoted model answers at once.
    """

    def __init__(
        self, *, ttl: float = RESOLUTION_TTL_SECONDS, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.ttl = ttl
        self.clock = clock
        self._entries: dict[tuple[str, int | None, str], tuple[float, Any]] = {}

    def resolve(self, *, registered_model_name: str, version: int | None, stage: str) -> Any:
        from predictions import selectors

        key = (registered_model_name, version, "" if version is not None else str(stage))
        now = self.clock()
        hit = self._entries.get(key)
        if hit is not None and hit[0] > now:
            return hit[1]
        found = selectors.model_version_resolve(
            registered_model_name=registered_model_name, version=version, stage=stage
        )
        if len(self._entries) >= MAX_RESOLUTIONS:
            self._entries.clear()
        self._entries[key] = (now + self.ttl, found)
        return found

    def challenger(self, *, registered_model: Any) -> Any | None:
        """The model's challenger (models_registry.selectors.challenger_of), None included, kept `ttl`
        seconds like a resolution: a canary request costs no query for it."""
        from models_registry import selectors as registry_selectors

        key = (registered_model.name, None, CHALLENGER)
        now = self.clock()
        hit = self._entries.get(key)
        if hit is not None and hit[0] > now:
            return hit[1]
        found = registry_selectors.challenger_of(registered_model)
        if len(self._entries) >= MAX_RESOLUTIONS:
            self._entries.clear()
        self._entries[key] = (now + self.ttl, found)
        return found

    def clear(self) -> None:
        self._entries.clear()


#: The process-wide caches used by the prediction service.
predictors = PredictorCache()
resolutions = VersionResolutions()


def version_saved(**kwargs: Any) -> None:
    """post_save of ModelVersion: forget resolutions now and at commit, so this process sees it at once."""
    from django.db import transaction

    resolutions.clear()
    transaction.on_commit(resolutions.clear)


def registered_model_saved(**kwargs: Any) -> None:
    """post_save of RegisteredModel: the same, for the challenger mode and the canary's share that a
    resolved version carries with its model (setting the share to 0 is a rollback)."""
    version_saved(**kwargs)


# Connected here rather than in the app's ready(): every process that serves predictions imports this
# module before its first request, and a save in any other process reaches it within the TTL.
post_save.connect(
    registered_model_saved,
    sender="models_registry.RegisteredModel",
    dispatch_uid="predictions.registered_model_saved",
)
