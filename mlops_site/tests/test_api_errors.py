"""mlops_site.api.exception_handler: every API error, DRF's own and the services', in the one envelope."""

from __future__ import annotations

import pytest
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import Http404
from django.urls import include, path
from rest_framework import serializers
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.test import APIClient
from rest_framework.throttling import SimpleRateThrottle
from rest_framework.views import APIView

import mlops_site.urls
from mlops_site import errors, storage
from mlops_site.api import exception_handler
from mlops_site.tests.helpers import error_body, messages_of
from models_registry import mlflow_gateway
from models_registry.transition_services import QualityGateError
from predictions import model_cache
from predictions.errors import ModelNotFound, NoVersionInStage
from predictions.validation import RowsInvalid
from tests.factories import make_user


class NestedSerializer(serializers.Serializer):
    age = serializers.IntegerField()


class BodySerializer(serializers.Serializer):
    name = serializers.CharField()
    person = NestedSerializer()


class RaisingView(APIView):
    """Raises whatever the URL names, standing in for any view whose service refuses or fails."""

    permission_classes = [AllowAny]
    errors = {
        "field": lambda: ValidationError({"target": ["Column 'target' is not in the dataset."]}),
        "plain": lambda: ValidationError("The file is empty."),
        "params": lambda: ValidationError("Need at least %(rows)d rows.", params={"rows": 10}),
        "storage": lambda: storage.StorageError("storage write of 'datasets/a.csv' failed: timed out"),
        "mlflow": lambda: mlflow_gateway.RegistryUnavailable("MLflow lookup failed: connection refused"),
        "mlflow-missing": lambda: mlflow_gateway.ModelNotFound("run 'abc' does not exist"),
        "model-file": lambda: model_cache.ModelUnavailable("The skops file of cancer v1 is missing."),
        "no-model": lambda: ModelNotFound("There is no registered model named 'nope'."),
        "no-stage": lambda: NoVersionInStage("Model 'cancer' has no production version yet."),
        "gate": lambda: QualityGateError(["accuracy is 0.7, below the minimum 0.8"]),
        "conflict": lambda: errors.Conflict("The job is queued; its files are ready once it has succeeded."),
        "rows": lambda: RowsInvalid(
            [
                errors.problem("'age' must be a number; got 'old'.", row=3, field="age", code="wrong_type"),
                errors.problem("'city' is missing.", row=5, field="city", code="missing_feature"),
            ]
        ),
        "unavailable": lambda: errors.ServiceUnavailable("The feature store is down.", code="features_down"),
        "http404": lambda: Http404("No such prediction."),
        "denied": lambda: PermissionDenied("Staff only."),
        "other": lambda: RuntimeError("a real bug"),
    }

    def get(self, request: Request, kind: str) -> Response:
        raise self.errors[kind]()

    def post(self, request: Request, kind: str) -> Response:
        BodySerializer(data=request.data).is_valid(raise_exception=True)
        return Response({})


urlpatterns = [
    path("raise/<str:kind>/", RaisingView.as_view()),
    path("", include(mlops_site.urls)),
]

pytestmark = [pytest.mark.urls(__name__), pytest.mark.django_db]


@pytest.fixture
def api_client() -> APIClient:
    return APIClient()


def test_a_django_validation_error_with_fields_is_a_400_naming_the_field(api_client):
    body = error_body(api_client.get("/raise/field/"), 400, "invalid")

    assert body["errors"] == [
        {
            "row": None,
            "field": "target",
            "code": "invalid",
            "message": "Column 'target' is not in the dataset.",
        }
    ]
    assert body["detail"] == "target: Column 'target' is not in the dataset."


def test_a_plain_django_validation_error_is_a_400_about_the_whole_input(api_client):
    body = error_body(api_client.get("/raise/plain/"), 400, "invalid")

    assert messages_of(body) == ["The file is empty."]
    assert body["detail"] == "The file is empty."


def test_validation_error_parameters_are_filled_in(api_client):
    assert messages_of(error_body(api_client.get("/raise/params/"), 400, "invalid")) == [
        "Need at least 10 rows."
    ]


def test_serializer_errors_are_flattened_with_each_field_and_code(api_client):
    response = api_client.post("/raise/any/", {"person": {"age": "old"}}, format="json")

    body = error_body(response, 400, "invalid")
    assert [(e["row"], e["field"], e["code"]) for e in body["errors"]] == [
        (None, "name", "required"),
        (None, "person.age", "invalid"),
    ]
    assert body["detail"] == "The input has 2 problems; each is listed in errors."


def test_row_problems_keep_their_row_counted_from_one_and_field(api_client):
    body = error_body(api_client.get("/raise/rows/"), 400, "invalid")

    assert [(e["row"], e["field"], e["code"]) for e in body["errors"]] == [
        (3, "age", "wrong_type"),
        (5, "city", "missing_feature"),
    ]
    assert body["detail"] == "The request was refused (2 problems); nothing was stored."


def test_a_malformed_body_is_a_400_parse_error(api_client):
    response = api_client.post("/raise/any/", "{oops", content_type="application/json")

    assert "JSON parse error" in error_body(response, 400, "parse_error")["detail"]


def test_an_unsupported_media_type_is_a_415(api_client):
    response = api_client.post("/raise/any/", "a,b", content_type="text/csv")

    error_body(response, 415, "unsupported_media_type")


def test_no_credentials_is_a_401_saying_how_to_authenticate(api_client):
    response = api_client.get("/api/me/")

    body = error_body(response, 401, "not_authenticated")
    assert body["detail"] == "Authentication credentials were not provided."
    assert response["WWW-Authenticate"] == "Token"


def test_a_wrong_token_is_a_401_authentication_failed(api_client):
    api_client.credentials(HTTP_AUTHORIZATION="Token not-a-real-token")

    assert error_body(api_client.get("/api/me/"), 401, "authentication_failed")["detail"] == "Invalid token."


def test_a_signed_in_user_without_staff_status_gets_a_403(api_client):
    api_client.force_authenticate(make_user("alice"))

    body = error_body(api_client.get("/api/datasets/"), 403, "permission_denied")

    assert body["detail"] == "You do not have permission to perform this action."


def test_a_django_permission_denied_is_a_403_with_its_message(api_client):
    assert error_body(api_client.get("/raise/denied/"), 403, "permission_denied")["detail"] == "Staff only."


def test_an_unknown_object_is_a_404_with_the_services_message(api_client):
    assert error_body(api_client.get("/raise/no-model/"), 404, "not_found")["detail"] == (
        "There is no registered model named 'nope'."
    )
    assert error_body(api_client.get("/raise/http404/"), 404, "not_found")["detail"] == "No such prediction."
    assert error_body(api_client.get("/raise/mlflow-missing/"), 404, "not_found")["detail"] == (
        "run 'abc' does not exist"
    )


def test_an_unknown_route_under_the_api_is_a_404_envelope(api_client):
    api_client.force_authenticate(make_user("alice"))

    error_body(api_client.get("/api/models/nope/"), 404, "not_found")


def test_a_method_the_endpoint_lacks_is_a_405(api_client):
    api_client.force_authenticate(make_user("alice"))

    response = api_client.put("/api/me/", {}, format="json")

    assert error_body(response, 405, "method_not_allowed")["detail"] == 'Method "PUT" not allowed.'
    assert response["Allow"] == "GET, HEAD, OPTIONS"


def test_a_conflict_is_a_409_with_its_own_code(api_client):
    assert error_body(api_client.get("/raise/no-stage/"), 409, "no_version_in_stage")["detail"] == (
        "Model 'cancer' has no production version yet."
    )
    error_body(api_client.get("/raise/conflict/"), 409, "conflict")


def test_the_quality_gate_is_a_409_listing_the_failing_metrics(api_client):
    body = error_body(api_client.get("/raise/gate/"), 409, "quality_gate")

    assert "quality gate" in body["detail"]
    assert [(e["field"], e["code"], e["message"]) for e in body["errors"]] == [
        (None, "quality_gate", "accuracy is 0.7, below the minimum 0.8")
    ]


def test_throttling_is_a_429_with_retry_after(api_client, monkeypatch, throttle_clock_frozen):
    monkeypatch.setattr(SimpleRateThrottle, "THROTTLE_RATES", {"anon": "1/minute", "user": "100/minute"})

    api_client.get("/raise/plain/")
    response = api_client.get("/raise/plain/")

    assert "throttled" in error_body(response, 429, "throttled")["detail"].lower()
    assert 0 < int(response["Retry-After"]) <= 60


def test_a_storage_outage_is_a_retryable_503_that_does_not_show_the_key(api_client):
    response = api_client.get("/raise/storage/")

    body = error_body(response, 503, "storage_unavailable")
    assert body["detail"] == errors.STORAGE_UNAVAILABLE
    assert "datasets/a.csv" not in response.content.decode()
    assert response["Retry-After"] == str(errors.RETRY_AFTER_SECONDS)


def test_a_storage_outage_is_logged_with_the_view_and_the_cause(api_client, caplog):
    with caplog.at_level("WARNING"):
        api_client.get("/raise/storage/")

    assert "RaisingView" in caplog.text
    assert "timed out" in caplog.text


def test_an_mlflow_outage_is_a_retryable_503(api_client):
    response = api_client.get("/raise/mlflow/")

    body = error_body(response, 503, "mlflow_unavailable")
    assert body["detail"] == errors.MLFLOW_UNAVAILABLE
    assert "connection refused" not in body["detail"]
    assert response["Retry-After"] == str(errors.RETRY_AFTER_SECONDS)


def test_a_service_unavailable_error_of_a_service_is_a_503_with_its_code_and_retry_after(api_client):
    response = api_client.get("/raise/unavailable/")

    assert error_body(response, 503, "features_down")["detail"] == "The feature store is down."
    assert response["Retry-After"] == str(errors.RETRY_AFTER_SECONDS)


def test_a_missing_model_file_is_a_503_without_retry_after(api_client):
    response = api_client.get("/raise/model-file/")

    assert (
        error_body(response, 503, "model_unavailable")["detail"] == "The skops file of cancer v1 is missing."
    )
    assert "Retry-After" not in response


def test_other_exceptions_are_left_to_django(api_client):
    with pytest.raises(RuntimeError, match="a real bug"):
        api_client.get("/raise/other/")


def test_the_handler_returns_none_for_unknown_errors():
    assert exception_handler(RuntimeError("x"), {}) is None
    assert errors.error_answer(RuntimeError("x")) is None


def test_the_handler_is_the_configured_one(settings):
    assert settings.REST_FRAMEWORK["EXCEPTION_HANDLER"] == "mlops_site.api.exception_handler"


def test_every_class_path_in_the_mapping_names_an_existing_exception():
    from django.utils.module_loading import import_string

    for class_path in errors.FOREIGN_ERRORS:
        found = import_string(class_path)
        assert issubclass(found, Exception), class_path
        assert f"{found.__module__}.{found.__qualname__}" == class_path
