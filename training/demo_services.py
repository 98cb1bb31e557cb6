"""The demo model: trained and promoted on a site's first start, so the first page a user opens can
predict; removable by staff with everything recorded against it."""

from __future__ import annotations

import logging
from collections import defaultdict
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.db.models import ProtectedError, QuerySet
from django.utils import timezone

from datasets.models import DatasetVersion
from mlops_site import storage
from models_registry import mlflow_gateway
from models_registry.models import ModelVersion, RegisteredModel
from training import demo_promotion
from training import services as training_services
from training.models import DemoModel, TrainingRun

logger = logging.getLogger(__name__)

DEMO_MODEL_NAME = "breast-cancer-demo"
#: The demo dataset `manage.py load_demo_datasets` loads, its target and a model that trains in seconds.
DEMO_DATASET, DEMO_TARGET, DEMO_ALGORITHM = "breast-cancer", "target", "logistic_regression"
DEMO_DESCRIPTION = demo_promotion.DEMO_DESCRIPTION
#: Rounds of deleting what protects the demo's rows: predictions protect versions, versions protect
#: training runs, which protect the model; a few rounds reach the bottom.
_PURGE_ROUNDS = 12


class DemoNotStarted(Exception):
    """Why no demo run was started (already started once, no demo data, the name taken)."""


def demo_model_start(*, created_by: AbstractBaseUser | None = None) -> TrainingRun:
    """Queue the demo's training run, once per site: a second call, even after the demo was removed,
    raises DemoNotStarted saying why. The worker trains it, then promotes it (demo_promotion)."""
    with transaction.atomic():
        if DemoModel.objects.select_for_update().exists():
            raise DemoNotStarted("The demo model was started on an earlier start; it is not trained again.")
        if RegisteredModel.objects.filter(name=DEMO_MODEL_NAME).exists():
            raise DemoNotStarted(f"A model named {DEMO_MODEL_NAME!r} exists already; it is left alone.")
        version = DatasetVersion.objects.filter(dataset__name=DEMO_DATASET).order_by("-version").first()
        if version is None:
            raise DemoNotStarted(f"No dataset {DEMO_DATASET!r}: run `manage.py load_demo_datasets` first.")
        run = training_services.training_run_create(
            dataset_version=version,
            model_name=DEMO_MODEL_NAME,
            algorithm=DEMO_ALGORITHM,
            params={},
            created_by=created_by,
            target_column=DEMO_TARGET,
        )
        # A concurrent first start inserts the same slot: its transaction fails here and rolls its run back.
        DemoModel.objects.create(name=DEMO_MODEL_NAME, training_run=run)
    return run


def demo_of(registered_model: RegisteredModel) -> DemoModel | None:
    """The demo record when this model is the site's demo model (and still there)."""
    return DemoModel.objects.filter(registered_model=registered_model, removed_at__isnull=True).first()


def demo_model_remove(*, user: AbstractBaseUser | None) -> str | None:
    """Delete the demo model with its versions and everything recorded against them (predictions,
    feedback, batch jobs, training runs, retrainings), in one transaction; its model files and MLflow
    entries go after the commit. Returns the removed model's name, None when there is no demo model."""
    with transaction.atomic():
        demo = DemoModel.objects.select_for_update().filter(removed_at__isnull=True).first()
        if demo is None or demo.registered_model_id is None:
            return None
        registered = RegisteredModel.objects.select_for_update().get(pk=demo.registered_model_id)
        versions = list(registered.versions.values_list("mlflow_version", "skops_key", "onnx_key"))
        runs = TrainingRun.objects.filter(model_name=registered.name)
        demo.removed_at = timezone.now()
        demo.registered_model = None
        demo.training_run = None
        demo.save(update_fields=["removed_at", "registered_model", "training_run"])
        _purge(ModelVersion.objects.filter(registered_model=registered))
        _purge(runs)
        _purge(RegisteredModel.objects.filter(pk=registered.pk))
        name = registered.name
        transaction.on_commit(lambda: _outside_cleanup(name, versions))
    logger.info(
        "demo model %s removed by %s", name, user.get_username() if user is not None else "the system"
    )
    return name


def _purge(queryset: QuerySet[Any], depth: int = 0) -> None:
    """Delete `queryset`, first deleting whatever protects its rows (recursively)."""
    for _ in range(_PURGE_ROUNDS):
        try:
            with transaction.atomic():
                queryset.delete()
            return
        except ProtectedError as exc:
            if depth >= _PURGE_ROUNDS:
                raise
            blocking: dict[type, set[Any]] = defaultdict(set)
            for row in exc.protected_objects:
                blocking[type(row)].add(row.pk)
            for model, keys in blocking.items():
                _purge(model._base_manager.filter(pk__in=keys), depth + 1)
    queryset.delete()


def _outside_cleanup(name: str, versions: list[tuple[int | None, str, str]]) -> None:
    for mlflow_version, *keys in versions:
        for key in keys:
            # Model files are content-addressed: another version may hold the same bytes.
            in_use = (
                ModelVersion.objects.filter(skops_key=key).exists()
                or ModelVersion.objects.filter(onnx_key=key).exists()
            )
            if key and not in_use:
                try:
                    storage.delete(key)
                except storage.StorageError:
                    logger.warning("could not delete the demo's model file %s", key, exc_info=True)
        if mlflow_version is None:
            continue
        try:
            mlflow_gateway.model_version_delete(name=name, version=mlflow_version)
        except mlflow_gateway.RegistryError:
            logger.warning("could not delete MLflow version %s of %s", mlflow_version, name, exc_info=True)
    try:
        mlflow_gateway.registered_model_delete_if_empty(name=name)
    except mlflow_gateway.RegistryError:
        logger.warning("could not remove %s from MLflow's registry", name, exc_info=True)
