"""Serving with Triton where no Triton runs: the opt-in's permissions, the sync's queueing and refusals,
the in-process fallback when Triton is down, and the binary tensor encoding.

What a real Triton does with all this (loads, promotions, answers equal to in-process ones) is proved in
tests/test_tritonserver.py against the real tritonserver.
"""

from __future__ import annotations

import json
from unittest import mock

import numpy as np
import pytest
from celery.exceptions import Retry
from django.test import Client
from prometheus_client import REGISTRY

from ml import predictor as predictor_module
from mlops_site.tests.helpers import error_body
from models_registry import services as registry_services
from models_registry import tasks, transition_services
from models_registry.models import RegisteredModel, Stage
from models_registry.tests.registry_helpers import make_model, make_version
from models_registry.tests.test_triton_export import trained_version
from models_registry.triton import client, deployment, local_server, model_config
from predictions import model_cache
from predictions.models import Prediction
from predictions.tests.helpers import make_model_version, trained_model
from tests.factories import make_api_client, make_user

pytestmark = pytest.mark.django_db

CANCER = trained_model("cancer")


def dead_url() -> str:
    """An address nothing listens on: connections are refused at once."""
    return f"http://127.0.0.1:{local_server.free_port()}"


def fallbacks(model: str, reason: str) -> float:
    return (
        REGISTRY.get_sample_value("mlops_triton_fallbacks_total", {"model": model, "reason": reason}) or 0.0
    )


def opted_in(version, *, served: bool = True) -> RegisteredModel:
    registered = version.registered_model
    RegisteredModel.objects.filter(pk=registered.pk).update(
        serve_with_triton=True, triton_version=version.version if served else None
    )
    registered.refresh_from_db()
    model_cache.resolutions.clear()
    return registered


def predict(api, rows, name="cancer"):
    return api.post(
        f"/api/models/{name}/predict/", json.dumps({"rows": rows}), content_type="application/json"
    )


# --- Permissions ----------------------------------------------------------------------------------------
def test_only_staff_may_see_or_change_whether_triton_serves_a_model(settings):
    settings.TRITON_URL = dead_url()
    make_model("churn")
    user, staff = make_user("uma"), make_user("sam", staff=True)
    put = {"data": {"serve_with_triton": True}, "format": "json"}

    error_body(make_api_client(None).put("/api/models/churn/triton/", **put), 401, "not_authenticated")
    error_body(make_api_client(user).put("/api/models/churn/triton/", **put), 403, "permission_denied")
    error_body(make_api_client(user).get("/api/models/churn/triton/"), 403, "permission_denied")
    page = Client()
    assert page.get("/models/churn/triton").status_code == 302  # to the login page
    page.force_login(user)
    assert page.post("/models/churn/triton", {"serve_with_triton": "on"}).status_code == 403
    assert RegisteredModel.objects.get(name="churn").serve_with_triton is False

    with mock.patch.object(tasks.triton_sync_task, "delay"):
        answer = make_api_client(staff).put("/api/models/churn/triton/", **put)
    assert answer.status_code == 200, answer.content
    assert RegisteredModel.objects.get(name="churn").serve_with_triton is True
    error_body(
        make_api_client(staff).put(
            "/api/models/churn/triton/", {"serve_with_triton": "maybe"}, format="json"
        ),
        400,
        "invalid",
    )
    error_body(make_api_client(staff).get("/api/models/nobody/triton/"), 404, "not_found")


def test_the_triton_page_shows_what_triton_serves_and_that_triton_is_off(settings):
    settings.TRITON_URL = ""
    version = make_version(make_model("churn"), 1, stage=Stage.PRODUCTION)
    page = Client()
    page.force_login(make_user("sam", staff=True))
    shown = page.get("/models/churn/triton").content.decode()
    assert 'id="triton-off"' in shown
    assert '<dd id="triton-opted-in">no' in shown
    assert f"/models/churn/versions/{version.version}/" in shown


# --- Queueing the sync ----------------------------------------------------------------------------------
def test_a_promotion_queues_a_triton_sync_on_commit_only_when_triton_is_configured(
    settings, django_capture_on_commit_callbacks
):
    registered = make_model("churn")
    first, second = make_version(registered, 1), make_version(registered, 2)
    with (
        mock.patch.object(tasks.triton_sync_task, "delay") as delay,
        mock.patch.object(registry_services, "model_aliases_sync_on_commit"),
    ):
        settings.TRITON_URL = ""
        with django_capture_on_commit_callbacks(execute=True):
            transition_services.model_version_transition(
                model_version=first, to_stage=Stage.PRODUCTION, user=None
            )
        assert delay.call_count == 0
        settings.TRITON_URL = dead_url()
        with django_capture_on_commit_callbacks(execute=True):
            transition_services.model_version_transition(
                model_version=second, to_stage=Stage.PRODUCTION, user=None
            )
        delay.assert_called_once_with(registered.pk)
        with django_capture_on_commit_callbacks(execute=True):
            transition_services.model_version_rollback(
                registered_model=registered, user=make_user("sam", staff=True), reason="bad"
            )
        assert delay.call_count == 2


def test_the_sweep_queues_a_sync_for_models_opted_in_or_still_loaded(settings):
    wanted = make_model("wanted", serve_with_triton=True)
    loaded = make_model("loaded", triton_version=3)
    make_model("neither")
    with mock.patch.object(tasks.triton_sync_task, "delay") as delay:
        settings.TRITON_URL = ""
        assert tasks.triton_sync_all_task.apply().get() == 0
        settings.TRITON_URL = dead_url()
        assert tasks.triton_sync_all_task.apply().get() == 2
    assert sorted(c.args[0] for c in delay.call_args_list) == sorted([wanted.pk, loaded.pk])


# --- The sync --------------------------------------------------------------------------------------------
def test_without_triton_url_the_sync_does_nothing(settings):
    settings.TRITON_URL = ""
    registered = make_model("churn", serve_with_triton=True)
    make_version(registered, 1, stage=Stage.PRODUCTION)
    assert deployment.triton_sync(registered_model_id=registered.pk).action == "off"
    assert deployment.triton_sync(registered_model_id=registered.pk + 1000).action == "unchanged"


def test_a_sync_that_cannot_reach_triton_records_why_and_the_task_retries(settings):
    settings.TRITON_URL = dead_url()
    registered = make_model("churn", serve_with_triton=True)
    make_version(registered, 1, stage=Stage.PRODUCTION)
    with pytest.raises(client.TritonUnreachable):
        deployment.triton_sync(registered_model_id=registered.pk)
    registered.refresh_from_db()
    assert settings.TRITON_URL in registered.triton_error
    assert registered.triton_version is None
    with pytest.raises(Retry):
        tasks.triton_sync_task.apply(args=[registered.pk], throw=True)


def test_the_load_request_sends_the_config_as_json_and_the_files_by_version():
    version = trained_version("churn", 4)
    for backend, files in (
        (model_config.ONNX_BACKEND, {"4/model.onnx"}),
        (model_config.PYTHON_BACKEND, {"4/model.onnx", "4/model.py"}),
    ):
        repository = deployment.services.triton_model_files(model_version=version, backend=backend)
        config, overrides = deployment.triton_load_request(repository, model_name="churn")
        assert set(overrides) == files
        assert overrides["4/model.onnx"] == repository["churn/4/model.onnx"]
        assert (config["name"], config["backend"]) == ("churn", backend)
        # JSON as Triton's own config endpoint gives it: protobuf field names, enum names.
        assert {i["name"]: i["data_type"] for i in config["input"]} == {
            "age": "TYPE_FP32",
            "income": "TYPE_FP32",
            "city": "TYPE_STRING",
        }
        json.dumps(config)


# --- Predictions while Triton is down --------------------------------------------------------------------
def test_predictions_of_a_version_triton_serves_are_answered_in_process_while_triton_is_down(settings):
    settings.TRITON_URL = ""
    version = make_model_version(trained=CANCER, name="cancer", version=1)
    api = make_api_client(make_user("uma"))
    in_process = predict(api, CANCER.sample_rows)
    assert in_process.status_code == 200, in_process.content

    settings.TRITON_URL = dead_url()
    opted_in(version)
    unreachable, paused = fallbacks("cancer", "unreachable"), fallbacks("cancer", "paused")
    answers = [predict(api, CANCER.sample_rows) for _ in range(2)]

    for answer in answers:
        assert answer.status_code == 200, answer.content
        assert [p["prediction"] for p in answer.json()["predictions"]] == [
            p["prediction"] for p in in_process.json()["predictions"]
        ]
        assert [p["probabilities"] for p in answer.json()["predictions"]] == [
            p["probabilities"] for p in in_process.json()["predictions"]
        ]
    # The first request tried Triton; the next one, within the pause, did not wait for it.
    assert fallbacks("cancer", "unreachable") == unreachable + 1
    assert fallbacks("cancer", "paused") == paused + 1
    assert Prediction.objects.filter(model_version=version).count() == 3 * len(CANCER.sample_rows)
    (loaded,) = [p for p in model_cache.predictors._entries.values() if p.kind == "triton"]
    assert isinstance(loaded, predictor_module.TritonPredictor)

    # Bad rows are still our validation's 400, with Triton configured.
    error_body(predict(api, [{**CANCER.sample_rows[0], "mean radius": "big"}]), 400, "invalid")


def test_a_version_triton_does_not_serve_is_predicted_in_process_without_asking_it(settings):
    settings.TRITON_URL = dead_url()
    version = make_model_version(trained=CANCER, name="cancer", version=1)
    opted_in(version, served=False)
    unreachable = fallbacks("cancer", "unreachable")
    assert predict(make_api_client(make_user("uma")), CANCER.sample_rows).status_code == 200
    assert fallbacks("cancer", "unreachable") == unreachable
    assert {p.kind for p in model_cache.predictors._entries.values()} == {"onnx"}


def test_the_triton_predictor_asks_triton_again_after_its_pause():
    now = [0.0]
    calls, told = [], []

    def infer(inputs, outputs):
        calls.append(sorted(inputs))
        raise client.TritonUnreachable("down")

    data = CANCER.onnx_bytes
    predictor = predictor_module.TritonPredictor(
        data,
        sha256=CANCER.onnx_sha256,
        feature_schema=CANCER.feature_schema,
        infer=infer,
        on_fallback=told.append,
        retry_after=10.0,
        clock=lambda: now[0],
    )
    expected = predictor_module.OnnxPredictor(
        data, sha256=CANCER.onnx_sha256, feature_schema=CANCER.feature_schema
    ).predict(CANCER.sample_rows)
    assert predictor.predict(CANCER.sample_rows) == expected
    assert predictor.predict(CANCER.sample_rows) == expected
    now[0] = 10.5
    assert predictor.predict(CANCER.sample_rows) == expected
    assert len(calls) == 2
    assert [type(t).__name__ for t in told] == ["TritonUnreachable", "NoneType", "TritonUnreachable"]


# --- The binary tensor encoding --------------------------------------------------------------------------
def test_binary_tensors_carry_nan_and_text_both_ways():
    numbers = np.array([[1.5], [np.nan]], dtype=np.float32)
    text = np.array([["Paris"], ["São Paulo"]], dtype=object)
    header, data = client._tensor("age", numbers, None, binary=True)
    assert header == {
        "name": "age",
        "shape": [2, 1],
        "datatype": "FP32",
        "parameters": {"binary_data_size": 8},
    }
    back = client._binary_array({"name": "age", "datatype": "FP32", "shape": [2, 1]}, data)
    np.testing.assert_array_equal(back, numbers)
    header, data = client._tensor("city", text, None, binary=True)
    assert header["datatype"] == "BYTES"
    back = client._binary_array({"name": "city", "datatype": "BYTES", "shape": [2, 1]}, data)
    assert back.tolist() == text.tolist()


def test_more_rows_than_tritons_batch_limit_go_in_several_requests_with_the_same_answers():
    local = predictor_module.OnnxPredictor(
        CANCER.onnx_bytes, sha256=CANCER.onnx_sha256, feature_schema=CANCER.feature_schema
    )
    sizes = []

    def infer(inputs, outputs):
        sizes.append(len(next(iter(inputs.values()))))
        return dict(zip(outputs, local.session.run(outputs, inputs), strict=True))

    predictor = predictor_module.TritonPredictor(
        CANCER.onnx_bytes,
        sha256=CANCER.onnx_sha256,
        feature_schema=CANCER.feature_schema,
        infer=infer,
        on_fallback=lambda exc: pytest.fail(f"fell back: {exc}"),
        max_rows=2,
    )
    rows = CANCER.sample_rows * 2  # 6 rows
    assert predictor.predict(rows) == local.predict(rows)
    assert sizes == [2, 2, 2]
