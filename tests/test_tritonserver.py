"""A real tritonserver (the nvidia-pytriton package's, on CPU) serves an exported version, and follows a
promotion through its repository API.

The binary has only the Python backend, so the repository is exported with `--backend python`: the same
model.onnx and config.pbtxt inputs and outputs, served by model.py around onnxruntime. Predictions through
Triton's HTTP API must equal in-process onnxruntime's, row for row. Needs requirements-triton.txt installed
(see models_registry/triton/local_server.py); skipped without it, failed under REQUIRE_SERVICES=True.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import onnxruntime
import pytest
from django.core.management import call_command

from mlops_site import storage
from models_registry.models import ModelVersion, Stage
from models_registry.tests.test_triton_export import frame, trained_version
from models_registry.triton import local_server

# Proved once, in the service run (see the Makefile's test target).
pytestmark = [pytest.mark.deployment, pytest.mark.django_db]


@pytest.fixture(scope="module")
def triton_installation() -> local_server.Installation:
    try:
        return local_server.installation()
    except local_server.TritonUnavailable as exc:
        if os.environ.get("REQUIRE_SERVICES") == "True":
            pytest.fail(f"required program missing: {exc}", pytrace=False)
        pytest.skip(str(exc))


def rows(count: int = 40) -> dict[str, np.ndarray]:
    """Feature columns as the graph takes them: [N, 1] float32 numbers and strings, unseen cities too."""
    data = frame(rows=count, seed=7)
    data.loc[: count // 8, "city"] = "Lisbon"
    return {
        "age": data[["age"]].to_numpy(np.float32),
        "income": data[["income"]].to_numpy(np.float32),
        "city": data[["city"]].to_numpy(object),
    }


def in_process(version: ModelVersion, features: dict[str, np.ndarray]) -> list[np.ndarray]:
    session = onnxruntime.InferenceSession(storage.read_bytes(version.onnx_key))
    return session.run(None, features)


def export(*arguments: str, repository: Path) -> None:
    call_command(
        "triton_export", *arguments, "--backend", "python", "--output", str(repository), stdout=io.StringIO()
    )


def test_triton_serves_the_exported_version_and_follows_a_promotion(triton_installation, tmp_path):
    first = trained_version("churn", 1, stage=Stage.PRODUCTION, params={"n_estimators": 20})
    second = trained_version("churn", 2, algorithm="logistic_regression", seed=3)
    features = rows()
    expected_first, expected_second = in_process(first, features), in_process(second, features)
    # The two versions answer differently, so the test can tell which one Triton serves.
    assert not np.allclose(expected_first[1], expected_second[1])
    repository = tmp_path / "repository"
    export("--production", repository=repository)

    with local_server.start(repository, models=["churn"], home=triton_installation.home) as triton:
        assert triton.ready("churn", 1)
        answer = triton.infer("churn", features)
        # Labels come back [N, 1]: the config's dims [1] per row over the model's label vector.
        assert answer["label"].ravel().tolist() == expected_first[0].tolist()
        np.testing.assert_array_equal(answer["probabilities"], expected_first[1])
        # Rows that do not match the exported inputs are refused by Triton, before the model sees them.
        with pytest.raises(local_server.TritonError, match="city"):
            triton.infer("churn", {"age": features["age"], "income": features["income"]})
        with pytest.raises(local_server.TritonError) as wrong_type:
            triton.infer("churn", {**features, "age": features["age"].astype(str)})
        assert wrong_type.value.status == 400

        # Promote version 2: it becomes production, is exported into the served repository, and loaded.
        ModelVersion.objects.filter(pk=first.pk).update(stage=Stage.ARCHIVED)
        ModelVersion.objects.filter(pk=second.pk).update(stage=Stage.PRODUCTION)
        export("--production", repository=repository)
        # Until the repository API is asked, Triton keeps serving what it loaded.
        np.testing.assert_array_equal(triton.infer("churn", features)["probabilities"], expected_first[1])
        triton.load("churn")

        assert triton.ready("churn", 2)
        assert not triton.ready("churn", 1)
        answer = triton.infer("churn", features)
        assert answer["label"].ravel().tolist() == expected_second[0].tolist()
        np.testing.assert_array_equal(answer["probabilities"], expected_second[1])
        index = {(m["name"], m.get("version"), m.get("state")) for m in triton.repository_index()}
        assert ("churn", "2", "READY") in index
