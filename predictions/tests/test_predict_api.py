"""Tests of POST /api/models/{name}/predict/: shapes, options, refusals as 400/404/409, nothing stored."""

from __future__ import annotations

import json

import pytest
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient
from rest_framework.throttling import UserRateThrottle

from mlops_site import errors, storage
from mlops_site.tests.helpers import error_body
from predictions import model_cache
from predictions.models import Prediction, PredictionRequest
from predictions.tests.helpers import make_model_version, trained_model

CANCER = trained_model("cancer")
ROW = CANCER.sample_rows[0]
URL = "/api/models/cancer/predict/"


@pytest.fixture
def client(alice):
    client = APIClient()
    client.force_authenticate(alice)
    return client


def post(client, body, url=URL, **extra):
    return client.post(url, json.dumps(body), content_type="application/json", **extra)


def assert_nothing_stored():
    assert PredictionRequest.objects.count() == 0
    assert Prediction.objects.count() == 0


def test_one_row_as_inputs_gets_a_prediction_with_its_id_and_version(client, alice, cancer_v1):
    response = post(client, {"inputs": ROW})

    assert response.status_code == 200, response.content
    body = response.json()
    stored = Prediction.objects.get()
    assert body["model"] == "cancer"
    assert body["model_version"] == 1
    assert body["stage"] == "production"
    assert body["served_by"] == "champion"
    assert body["request_id"] == stored.request.request_id
    assert body["predictions"] == [
        {
            "id": stored.pk,
            "key": None,
            "prediction": stored.prediction,
            "probabilities": stored.probabilities,
            "warnings": [],
            "model_version": 1,
            "served_by": "champion",
        }
    ]
    assert stored.user == alice
    assert stored.channel == "api"


def test_a_list_of_rows_gets_one_prediction_per_row_in_order(client, cancer_v1):
    response = post(client, {"rows": CANCER.sample_rows})

    assert response.status_code == 200
    ids = [p["id"] for p in response.json()["predictions"]]
    assert (
        list(Prediction.objects.filter(pk__in=ids).order_by("row_index").values_list("pk", flat=True)) == ids
    )
    assert PredictionRequest.objects.get().n_rows == 3


def test_a_token_authenticates_and_no_credentials_get_401(alice, cancer_v1):
    token = Token.objects.create(user=alice)
    client = APIClient()

    error_body(post(client, {"inputs": ROW}), 401, "not_authenticated")
    response = post(client, {"inputs": ROW}, HTTP_AUTHORIZATION=f"Token {token.key}")
    assert response.status_code == 200
    assert Prediction.objects.get().user == alice


def test_the_request_id_header_is_stored(client, cancer_v1):
    response = post(client, {"inputs": ROW}, HTTP_X_REQUEST_ID="trace-abc.1")

    assert response.json()["request_id"] == "trace-abc.1"
    assert PredictionRequest.objects.get().request_id == "trace-abc.1"


def test_a_pinned_version_answers(client, cancer_v1):
    make_model_version(
        trained=trained_model("cancer", algorithm="logistic_regression"), version=2, stage="none"
    )

    response = post(client, {"inputs": ROW, "version": 2})

    assert response.status_code == 200
    assert (response.json()["model_version"], response.json()["stage"]) == (2, "none")
    assert Prediction.objects.get().model_version.version == 2


def test_stage_staging_answers_with_the_staging_version(client, cancer_v1):
    make_model_version(trained=CANCER, version=2, stage="staging")

    response = post(client, {"rows": [ROW], "stage": "staging"})

    assert response.status_code == 200
    assert (response.json()["model_version"], response.json()["stage"]) == (2, "staging")


def test_an_unknown_model_is_404(client, cancer_v1):
    response = post(client, {"inputs": ROW}, url="/api/models/unknown/predict/")

    assert error_body(response, 404, "not_found")["detail"] == "There is no registered model named 'unknown'."
    assert_nothing_stored()


def test_an_unknown_version_is_404(client, cancer_v1):
    response = post(client, {"inputs": ROW, "version": 9})

    assert error_body(response, 404, "not_found")["detail"] == "Model 'cancer' has no version 9."


def test_no_production_version_is_a_clear_409(client, db):
    make_model_version(trained=CANCER, stage="staging")

    response = post(client, {"inputs": ROW})

    assert "no production version" in error_body(response, 409, "no_version_in_stage")["detail"]
    assert_nothing_stored()


def test_a_missing_model_file_is_503_not_500(client, cancer_v1):
    storage.delete(cancer_v1.onnx_key)
    storage.delete(cancer_v1.skops_key)

    response = post(client, {"inputs": ROW})

    assert "missing from storage" in error_body(response, 503, "model_unavailable")["detail"]
    assert_nothing_stored()


def refused(response):
    body = error_body(response, 400, "invalid")
    assert_nothing_stored()
    return [(e["row"], e["field"], e["code"]) for e in body["errors"]]


def test_a_missing_feature_is_400_naming_row_and_field(client, cancer_v1):
    row = {k: v for k, v in ROW.items() if k != "mean area"}

    response = post(client, {"rows": [ROW, row]})

    # Rows count from 1, as in a batch job's errors file: the second row sent is row 2.
    assert refused(response) == [(2, "mean area", "missing_feature")]
    assert response.json()["detail"] == "The request was refused (1 problem); nothing was stored."


def test_an_unknown_field_is_400(client, cancer_v1):
    assert refused(post(client, {"inputs": {**ROW, "colour": "red"}})) == [(1, "colour", "unknown_field")]


def test_a_wrong_type_is_400(client, cancer_v1):
    body = {
        "rows": [
            {**ROW, "mean radius": "large"},
            {**ROW, "mean texture": {"v": 1}},
            {**ROW, "mean area": True},
        ]
    }

    assert refused(post(client, body)) == [
        (1, "mean radius", "wrong_type"),
        (2, "mean texture", "wrong_type"),
        (3, "mean area", "wrong_type"),
    ]


def test_json_nan_and_infinity_literals_are_400_naming_the_field(client, cancer_v1):
    rows = [dict(ROW), dict(ROW)]
    raw = json.dumps({"rows": rows})
    # Python's json writes NaN/Infinity literals, as many clients do.
    raw = raw.replace(json.dumps(ROW["mean radius"]), "NaN", 1)
    raw = raw.replace(json.dumps(ROW["mean texture"]), "-Infinity", 2)

    response = client.post(URL, raw, content_type="application/json")

    assert refused(response) == [
        (1, "mean radius", "not_finite"),
        (1, "mean texture", "not_finite"),
        (2, "mean texture", "not_finite"),
    ]


def test_nan_and_infinity_as_text_are_400(client, cancer_v1):
    body = {"rows": [{**ROW, "mean radius": "nan"}, {**ROW, "mean radius": "Infinity"}]}

    assert refused(post(client, body)) == [(1, "mean radius", "not_finite"), (2, "mean radius", "not_finite")]


def test_more_rows_than_the_limit_is_400_naming_the_limit(client, cancer_v1, settings):
    settings.PREDICTION_MAX_ROWS = 5

    response = post(client, {"rows": [ROW] * 6})

    assert refused(response) == [(None, None, "too_many_rows")]
    assert "at most 5 rows" in response.json()["errors"][0]["message"]


def test_an_unknown_category_is_accepted_with_a_warning(client, mixed_v1):
    row = {"age": 30, "income": 52_000, "city": "Lisbon"}

    response = post(client, {"inputs": row}, url="/api/models/mixed/predict/")

    assert response.status_code == 200
    (prediction,) = response.json()["predictions"]
    assert [(w["field"], w["code"]) for w in prediction["warnings"]] == [("city", "unknown_category")]
    assert Prediction.objects.get().warnings == prediction["warnings"]


def test_an_out_of_range_value_is_accepted_and_flagged(client, cancer_v1):
    response = post(client, {"inputs": {**ROW, "mean radius": 99.5}})

    assert response.status_code == 200
    (warning,) = response.json()["predictions"][0]["warnings"]
    assert (warning["field"], warning["code"]) == ("mean radius", "out_of_range")
    assert "99.5" in warning["message"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ([ROW], None),
        ({"rows": [ROW], "inputs": ROW}, None),
        ({}, None),
        ({"inputs": [ROW]}, "inputs"),
        ({"rows": [ROW], "modle": "x"}, "modle"),
        ({"rows": [ROW], "version": 1, "stage": "staging"}, "stage"),
        ({"rows": [ROW], "stage": "archived"}, "stage"),
        ({"rows": [ROW], "version": "one"}, "version"),
        ({"rows": [ROW], "version": 0}, "version"),
        ({"rows": "not a list"}, "rows"),
        ({"rows": [ROW], "request_id": "has spaces"}, "request_id"),
    ],
)
def test_a_badly_shaped_body_is_400(client, cancer_v1, body, field):
    problems = refused(post(client, body))

    assert [(row, name) for row, name, _ in problems] == [(None, field)]


def test_malformed_json_is_400(client, cancer_v1):
    response = client.post(URL, "{rows: oops", content_type="application/json")

    error_body(response, 400, "parse_error")
    assert_nothing_stored()


def test_predictions_are_throttled_by_the_user_rate(client, cancer_v1, monkeypatch, throttle_clock_frozen):
    monkeypatch.setattr(UserRateThrottle, "THROTTLE_RATES", {"user": "2/minute", "anon": "2/minute"})

    answers = [post(client, {"inputs": ROW}) for _ in range(3)]

    assert [a.status_code for a in answers] == [200, 200, 429]
    error_body(answers[-1], 429, "throttled")
    assert int(answers[-1]["Retry-After"]) > 0
    assert Prediction.objects.count() == 2


def test_a_body_over_the_upload_limit_is_413(client, cancer_v1, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000

    response = post(client, {"rows": [ROW] * 10})

    assert "at most 1000 bytes" in error_body(response, 413, "too_large")["detail"]
    assert_nothing_stored()


def test_a_storage_outage_while_loading_the_model_is_a_retryable_503(client, cancer_v1, monkeypatch):
    def unavailable(key):
        raise storage.StorageError(f"storage read of {key!r} failed: connection refused")

    monkeypatch.setattr(storage, "read_bytes", unavailable)

    response = post(client, {"inputs": ROW})

    assert error_body(response, 503, "storage_unavailable")["detail"] == errors.STORAGE_UNAVAILABLE
    assert response["Retry-After"] == str(errors.RETRY_AFTER_SECONDS)
    assert_nothing_stored()


def test_the_api_schema_documents_the_prediction_endpoints(client):
    response = client.get("/api/schema/", {"format": "json"})

    assert response.status_code == 200
    paths = json.loads(response.content)["paths"]
    assert "post" in paths["/api/models/{name}/predict/"]
    assert {"/api/predictions/", "/api/predictions/{id}/"} <= set(paths)


@pytest.mark.parametrize("value", [1e39, -1e39, 1e308, "1e308", "-3.5e38"])
def test_a_number_beyond_float32_is_400_naming_the_limit(client, cancer_v1, value):
    body = error_body(post(client, {"rows": [ROW, {**ROW, "mean area": value}]}), 400, "invalid")

    assert [(e["row"], e["field"], e["code"]) for e in body["errors"]] == [
        (2, "mean area", "too_large_number")
    ]
    assert "3.402823e+38" in body["errors"][0]["message"]
    assert_nothing_stored()


def test_the_largest_float32_number_is_predicted(client, cancer_v1):
    response = post(client, {"inputs": {**ROW, "mean area": 3.4e38}})

    assert response.status_code == 200, response.content
    assert Prediction.objects.count() == 1


def test_a_category_longer_than_the_limit_is_400_and_nothing_is_stored(client, mixed_v1, settings):
    settings.PREDICTION_MAX_TEXT_CHARS = 50
    row = {"age": 30, "income": 50_000.0, "city": "B" * 51}

    body = error_body(post(client, {"rows": [row]}, url="/api/models/mixed/predict/"), 400, "invalid")

    assert [(e["row"], e["field"], e["code"]) for e in body["errors"]] == [(1, "city", "too_long_text")]
    assert "at most 50 characters" in body["errors"][0]["message"]
    assert_nothing_stored()


def test_a_megabyte_category_is_refused_under_the_default_limit(client, mixed_v1):
    row = {"age": 30, "income": 50_000.0, "city": "x" * 1_000_000}

    assert refused(post(client, {"rows": [row]}, url="/api/models/mixed/predict/")) == [
        (1, "city", "too_long_text")
    ]


def test_a_model_giving_nan_probabilities_refuses_the_row_and_stores_nothing(client, cancer_v1, monkeypatch):
    predictor = model_cache.predictors.get(model_cache.ModelArtifacts.of_version(cancer_v1))
    real = predictor.predict_columns

    def nan_for_second_row(columns):
        labels, probabilities = real(columns)
        probabilities[1] = [float("nan")] * len(probabilities[1])
        return labels, probabilities

    monkeypatch.setattr(predictor, "predict_columns", nan_for_second_row)

    assert refused(post(client, {"rows": [ROW, ROW, ROW]})) == [(2, None, "not_finite_output")]


@pytest.mark.django_db
def test_keys_name_each_row_and_come_back_with_its_prediction(client, cancer_v1):
    response = post(client, {"rows": CANCER.sample_rows[:2], "keys": ["order-17", "order-18"]})

    assert response.status_code == 200, response.content
    assert [p["key"] for p in response.json()["predictions"]] == ["order-17", "order-18"]
    single = post(client, {"inputs": ROW, "key": "order-19"})
    assert single.json()["predictions"][0]["key"] == "order-19"
    listed = client.get("/api/predictions/").json()["results"]
    assert {row["key"] for row in listed} == {"order-17", "order-18", "order-19"}


@pytest.mark.django_db
def test_a_key_already_used_for_the_model_refuses_the_request(client, cancer_v1):
    post(client, {"inputs": ROW, "key": "order-1"})

    response = post(client, {"rows": CANCER.sample_rows[:2], "keys": ["order-2", "order-1"]})

    assert response.status_code == 400
    assert response.json()["errors"] == [
        {
            "row": 2,
            "field": "key",
            "code": "duplicate_key",
            "message": "Key 'order-1' already names a prediction of model 'cancer'.",
        }
    ]
    assert Prediction.objects.count() == 1


@pytest.mark.django_db
def test_the_same_key_may_name_rows_of_two_models(client, cancer_v1):
    make_model_version(trained=trained_model("cancer"), name="cancer-b", version=1)

    assert post(client, {"inputs": ROW, "key": "shared"}).status_code == 200
    other = post(client, {"inputs": ROW, "key": "shared"}, url="/api/models/cancer-b/predict/")
    assert other.status_code == 200


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"rows": [ROW, ROW], "keys": ["a", "a"]}, "key"),
        ({"rows": [ROW, ROW], "keys": ["a"]}, "keys"),
        ({"rows": [ROW], "keys": ["has space"]}, "key"),
        ({"rows": [ROW], "keys": ["k" * 129]}, "key"),
        ({"rows": [ROW], "keys": [17]}, "key"),
        ({"rows": [ROW], "keys": [None]}, "key"),
        ({"rows": [ROW], "key": "a"}, "key"),
        ({"inputs": ROW, "keys": ["a"]}, "keys"),
        ({"inputs": ROW, "key": ""}, "key"),
    ],
)
def test_bad_keys_are_refused_naming_the_row_and_nothing_is_stored(client, cancer_v1, body, field):
    response = post(client, body)

    assert response.status_code == 400, response.content
    assert field in {e["field"] for e in response.json()["errors"]}
    assert_nothing_stored()
