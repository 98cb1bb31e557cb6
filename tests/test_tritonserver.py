"""A real tritonserver (the nvidia-pytriton package's, on CPU) serves an exported version, and follows a
promotion through its repository API; with TRITON_URL set, the prediction API goes through it.

The binary has only the Python backend, so the repository is exported with `--backend python`: the same
model.onnx and config.pbtxt inputs and outputs, served by model.py around onnxruntime. Predictions through
Triton's HTTP API must equal in-process onnxruntime's, row for row. Needs requirements-triton.txt installed
(see models_registry/triton/local_server.py); skipped without it, failed under REQUIRE_SERVICES=True.
One tritonserver serves the module's tests (it starts in seconds), each test with its own model names.
"""

from __future__ import annotations

import io
import os
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnxruntime
import pytest
from django.core.management import call_command
from django.test import Client
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from ml import predictor as predictor_module
from mlops_site import storage
from mlops_site.celery import app as celery_app
from mlops_site.tests.helpers import error_body
from models_registry import tasks, transition_services
from models_registry.models import ModelVersion, Stage
from models_registry.tests.registry_helpers import make_model, make_version
from models_registry.tests.test_triton_export import frame, trained_version
from models_registry.triton import deployment, local_server
from predictions import model_cache
from predictions.models import Prediction, PredictionRequest
from predictions.validation import rows_validate
from tests.factories import make_api_client, make_user

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


@pytest.fixture(scope="module")
def triton_repository(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("triton-repository")


@pytest.fixture(scope="module")
def triton(triton_installation, triton_repository) -> Iterator[local_server.Server]:
    with local_server.start(triton_repository, home=triton_installation.home) as server:
        yield server


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


def test_triton_serves_the_exported_version_and_follows_a_promotion(triton, triton_repository):
    first = trained_version("churn", 1, stage=Stage.PRODUCTION, params={"n_estimators": 20})
    second = trained_version("churn", 2, algorithm="logistic_regression", seed=3)
    features = rows()
    expected_first, expected_second = in_process(first, features), in_process(second, features)
    # The two versions answer differently, so the test can tell which one Triton serves.
    assert not np.allclose(expected_first[1], expected_second[1])
    repository = triton_repository
    export("--production", repository=repository)
    triton.load("churn")

    assert triton.ready("churn", 1)
    answer = triton.infer("churn", features)
    # Labels come back [N, 1]: the config's dims [1] per row over the model's label vector.
    assert answer["label"].ravel().tolist() == expected_first[0].tolist()
    np.testing.assert_array_equal(answer["probabilities"], expected_first[1])
    # The binary tensor extension (what the prediction API uses) carries the same tensors.
    binary = triton.infer("churn", features, outputs=["label", "probabilities"], binary=True)
    assert binary["label"].ravel().tolist() == expected_first[0].tolist()
    np.testing.assert_array_equal(binary["probabilities"], expected_first[1])
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


# --- The prediction API through Triton ------------------------------------------------------------------
def api_rows(count: int = 12) -> list[dict]:
    """Rows as clients send them, one with a missing number (NaN for the model) and an unseen city."""
    data = frame(rows=count, seed=11)
    records = [
        {"age": float(r.age), "income": float(r.income), "city": str(r.city)} for r in data.itertuples()
    ]
    records[0]["income"] = None
    records[1]["city"] = "Lisbon"
    return records


def served_requests(triton: local_server.Server, model: str, version: int) -> float:
    """Successful inferences Triton counted for the model version (its Prometheus metrics)."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{triton.metrics_port}/metrics", timeout=5).read()
    for family in text_string_to_metric_families(text.decode()):
        if family.name == "nv_inference_request_success":
            for sample in family.samples:
                if sample.labels.get("model") == model and sample.labels.get("version") == str(version):
                    return sample.value
    return 0.0


def expected(version: ModelVersion, records: list[dict]) -> tuple[list, list[dict]]:
    """In-process onnxruntime's answers to the rows, as the API stores them."""
    validated = rows_validate(rows=records, feature_schema=version.feature_schema, max_rows=1000)
    local = predictor_module.predictor_from_artifacts(
        feature_schema=version.feature_schema,
        onnx_bytes=storage.read_bytes(version.onnx_key),
        onnx_sha256=version.onnx_sha256,
        classes=version.classes,
    )
    labels, probabilities = local.predict_columns(validated.columns)
    return labels, [dict(zip(map(str, version.classes), p, strict=True)) for p in probabilities]


def predict(client, model: str, records: list[dict], **options):
    return client.post(f"/api/models/{model}/predict/", {"rows": records, **options}, format="json")


def fallbacks(model: str) -> float:
    return sum(
        REGISTRY.get_sample_value("mlops_triton_fallbacks_total", {"model": model, "reason": reason}) or 0.0
        for reason in ("unreachable", "error", "paused")
    )


@pytest.fixture
def triton_settings(settings, triton, monkeypatch):
    settings.TRITON_URL = triton.url
    settings.TRITON_BACKEND = "python"
    # Celery runs each task inline, so the sync queued on commit happens before the test goes on.
    monkeypatch.setitem(celery_app.conf, "task_always_eager", True)
    # MLflow's aliases are not what this proves (and its store takes seconds to create).
    monkeypatch.setattr(tasks.model_aliases_sync_task, "delay", lambda *args: None)
    return settings


def test_the_api_predicts_through_triton_and_triton_follows_promotions_and_the_opt_in(
    triton_settings, triton, django_capture_on_commit_callbacks
):
    first = trained_version("scoring", 1, stage=Stage.PRODUCTION, params={"n_estimators": 20})
    second = trained_version("scoring", 2, algorithm="logistic_regression", seed=3)
    registered = first.registered_model
    staff_user, user = make_user("tess", staff=True), make_user("uma")
    staff, client = make_api_client(staff_user), make_api_client(user)
    records = api_rows()

    # Someone without staff status cannot opt a model in.
    error_body(
        client.put("/api/models/scoring/triton/", {"serve_with_triton": True}, format="json"),
        403,
        "permission_denied",
    )
    with django_capture_on_commit_callbacks(execute=True):
        answer = staff.put("/api/models/scoring/triton/", {"serve_with_triton": True}, format="json")
    # The answer is given before the transaction commits, so before Triton loads the version.
    assert answer.status_code == 200, answer.content
    assert (answer.json()["serve_with_triton"], answer.json()["triton_version"]) == (True, None)
    state = staff.get("/api/models/scoring/triton/").json()
    assert state | {"synced_at": None} == {
        "serve_with_triton": True,
        "configured": True,
        "backend": "python",
        "production_version": 1,
        "triton_version": 1,
        "served_by_triton": True,
        "synced_at": None,
        "error": "",
    }
    assert triton.model_versions("scoring") == [1]

    # Predictions of version 1 go through Triton (it counts them) and equal in-process onnxruntime's.
    before, fell_back = served_requests(triton, "scoring", 1), fallbacks("scoring")
    response = predict(client, "scoring", records)
    assert response.status_code == 200, response.content
    assert served_requests(triton, "scoring", 1) == before + 1
    assert fallbacks("scoring") == fell_back
    labels, probabilities = expected(first, records)
    stored = list(Prediction.objects.filter(model_version=first).order_by("row_index"))
    assert [p.prediction for p in stored] == labels
    for row, want in zip(stored, probabilities, strict=True):
        assert row.probabilities == pytest.approx(want, abs=1e-7)
    assert [p["model_version"] for p in response.json()["predictions"]] == [1] * len(records)
    request = PredictionRequest.objects.get(model_version=first)
    assert (request.stage, request.channel, request.n_rows) == ("production", "api", len(records))
    assert request.latency_ms > 0
    assert stored[0].warnings  # the missing income, imputed by the model, as in-process

    # Bad rows are refused by our validation (400), and never reach Triton.
    bad = predict(client, "scoring", [{"age": "old", "income": 1.0, "city": "Paris"}])
    error_body(bad, 400, "invalid")
    assert served_requests(triton, "scoring", 1) == before + 1

    # Promote version 2: Triton loads it and drops version 1; the API's answers are version 2's.
    with django_capture_on_commit_callbacks(execute=True):
        transition_services.model_version_transition(
            model_version=second, to_stage=Stage.PRODUCTION, user=staff_user
        )
    # Loaded with its files in the request, the model is not in Triton's (empty) repository: its
    # metadata says which versions Triton serves.
    assert triton.model_versions("scoring") == [2]
    assert not triton.ready("scoring", 1)
    assert "scoring" not in {m["name"] for m in triton.repository_index()}
    registered.refresh_from_db()
    assert registered.triton_version == 2
    model_cache.resolutions.clear()
    response = predict(client, "scoring", records)
    assert response.status_code == 200, response.content
    assert served_requests(triton, "scoring", 2) == 1
    labels, _ = expected(second, records)
    assert [
        p.prediction for p in Prediction.objects.filter(model_version=second).order_by("row_index")
    ] == labels
    # Version 1, pinned, is no longer in Triton: it is predicted in-process, still version 1's answers.
    pinned = predict(client, "scoring", records[:3], version=1)
    assert pinned.status_code == 200, pinned.content
    assert [p["prediction"] for p in pinned.json()["predictions"]] == expected(first, records[:3])[0]
    assert fallbacks("scoring") == fell_back

    # Opting out from the model's page unloads it.
    page = Client()
    page.force_login(staff_user)
    with django_capture_on_commit_callbacks(execute=True):
        assert page.post("/models/scoring/triton", {}).status_code == 302
    assert triton.model_versions("scoring") == []
    registered.refresh_from_db()
    assert (registered.serve_with_triton, registered.triton_version) == (False, None)
    assert (
        'Triton serves</dt><dd id="triton-version">nothing'
        in page.get("/models/scoring/triton").content.decode()
    )


def test_a_version_triton_cannot_serve_is_refused_with_its_reason_and_predicted_in_process(
    triton_settings, triton
):
    version = make_version(make_model("plain", serve_with_triton=True), 1, stage=Stage.PRODUCTION)
    outcome = deployment.triton_sync(registered_model_id=version.registered_model_id)
    assert (outcome.action, outcome.version) == ("refused", None)
    version.registered_model.refresh_from_db()
    assert "has no ONNX file" in version.registered_model.triton_error
    assert not triton.ready("plain")
