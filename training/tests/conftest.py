"""Fixtures of the closed-loop tests: a champion trained here on the drift simulation's concept."""

from __future__ import annotations

import pytest

from ml import drift_simulation as sim
from models_registry import transition_services
from models_registry.models import ModelVersion, Stage
from training.tests.helpers import dataset_upload, run_train, version_of


@pytest.fixture
def champion(staff) -> ModelVersion:
    dataset = dataset_upload(sim.training_frame(500, seed=1), name="concept", target=sim.TARGET, user=staff)
    version = version_of(
        run_train(dataset, model_name="concept", params={"n_estimators": 30, "max_depth": 6})
    )
    transition_services.model_version_transition(model_version=version, to_stage=Stage.PRODUCTION, user=staff)
    version.refresh_from_db()
    return version
