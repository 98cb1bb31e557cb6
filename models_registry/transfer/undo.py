"""The undo log of an import: what it wrote outside its transaction, removed again when it fails."""

from __future__ import annotations

import logging

from datasets import services as dataset_services
from datasets.models import DatasetVersion
from models_registry import mlflow_gateway, services
from models_registry.models import ModelVersion

logger = logging.getLogger(__name__)


class ImportUndo:
    """The stored object keys, the MLflow version and the dataset version an import created."""

    def __init__(self) -> None:
        self.keys: list[str] = []
        self.dataset_version: DatasetVersion | None = None
        self.mlflow_version: int | None = None

    def run(self, *, name: str) -> None:
        """Remove what is listed and no version records; failures are logged, the list is emptied."""
        # A concurrent import of the same archive may have recorded the same MLflow version and files
        # (both are keyed by content): only what no version records is removed.
        recorded = ModelVersion.objects.filter(
            registered_model__name=name, mlflow_version=self.mlflow_version
        )
        if self.mlflow_version is not None and not recorded.exists():
            try:
                mlflow_gateway.model_version_delete(name=name, version=self.mlflow_version)
                if not ModelVersion.objects.filter(registered_model__name=name).exists():
                    mlflow_gateway.registered_model_delete_if_empty(name=name)
            except mlflow_gateway.RegistryError:
                logger.exception(
                    "could not delete MLflow version %s of %s after a failed import",
                    self.mlflow_version,
                    name,
                )
        for key in self.keys:
            services.model_object_delete_unreferenced(key=key)
        if self.dataset_version is not None:
            try:
                # Its stored files are removed when this deletion commits.
                dataset_services.dataset_version_delete(version=self.dataset_version)
            except Exception:
                logger.exception(
                    "could not delete dataset version %s after a failed import", self.dataset_version
                )
        self.keys, self.dataset_version, self.mlflow_version = [], None, None
