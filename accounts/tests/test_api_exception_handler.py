"""mlops_site.api.exception_handler: domain validation errors become 400s, storage outages 503s."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError
from django.urls import path
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from mlops_site import storage
from mlops_site.api import exception_handler


class RaisingView(APIView):
    """Raises whatever the URL names, standing in for any view whose service fails."""

    permission_classes = [AllowAny]
    errors = {
        "field": lambda: ValidationError({"target": ["Column 'target' is not in the dataset."]}),
        "plain": lambda: ValidationError("The file is empty."),
        "params": lambda: ValidationError("Need at least %(rows)d rows.", params={"rows": 10}),
        "storage": lambda: storage.StorageError("storage write of 'datasets/a.csv' failed: timed out"),
        "other": lambda: RuntimeError("a real bug"),
    }

    def get(self, request: Request, kind: str) -> Response:
        raise self.errors[kind]()


urlpatterns = [path("raise/<str:kind>/", RaisingView.as_view())]

pytestmark = pytest.mark.urls(__name__)


def test_a_django_validation_error_with_fields_is_a_400_keyed_by_field(api_client):
    response = api_client.get("/raise/field/")

    assert response.status_code == 400
    assert response.json() == {"target": ["Column 'target' is not in the dataset."]}


def test_a_plain_django_validation_error_is_a_400_list(api_client):
    response = api_client.get("/raise/plain/")

    assert response.status_code == 400
    assert response.json() == ["The file is empty."]


def test_validation_error_parameters_are_filled_in(api_client):
    assert api_client.get("/raise/params/").json() == ["Need at least 10 rows."]


def test_a_storage_error_is_a_503_saying_storage_is_unavailable(api_client):
    response = api_client.get("/raise/storage/")

    assert response.status_code == 503
    assert response.json() == {
        "detail": "Object storage is unavailable: storage write of 'datasets/a.csv' failed: timed out"
    }
    assert response["Retry-After"] == "30"


def test_a_storage_error_is_logged(api_client, caplog):
    with caplog.at_level("WARNING", logger="mlops_site.api"):
        api_client.get("/raise/storage/")

    assert "RaisingView" in caplog.text
    assert "timed out" in caplog.text


def test_other_exceptions_are_left_to_django(api_client):
    with pytest.raises(RuntimeError, match="a real bug"):
        api_client.get("/raise/other/")


def test_the_handler_returns_none_for_unknown_errors():
    assert exception_handler(RuntimeError("x"), {}) is None


def test_the_handler_is_the_configured_one(settings):
    assert settings.REST_FRAMEWORK["EXCEPTION_HANDLER"] == "mlops_site.api.exception_handler"
