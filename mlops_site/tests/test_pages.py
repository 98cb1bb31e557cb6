"""mlops_site.pages: refusals shown on pages through the one mapping, and the API's own 404 and 500."""

from __future__ import annotations

import pytest
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import HttpRequest, HttpResponse
from django.test import Client
from django.urls import include, path

import mlops_site.urls
from mlops_site import errors, pages, storage
from mlops_site.tests.helpers import error_body
from models_registry import mlflow_gateway
from predictions.errors import NoVersionInStage

RAISED = {
    "storage": lambda: storage.StorageError("storage read of 'models/x.skops' failed: timed out"),
    "mlflow": lambda: mlflow_gateway.RegistryUnavailable("MLflow lookup failed: connection refused"),
    "conflict": lambda: NoVersionInStage("Model 'cancer' has no production version yet."),
    "not-found": lambda: errors.NotFound("No such batch job."),
    "invalid": lambda: ValidationError({"name": ["A model name is required."]}),
    "denied": lambda: PermissionDenied("Only staff may see this."),
    "bug": lambda: RuntimeError("boom"),
}


@pages.domain_errors
def raising(request: HttpRequest, kind: str) -> HttpResponse:
    raise RAISED[kind]()


def form_page(request: HttpRequest, kind: str) -> HttpResponse:
    """Stands in for a form page that shows a refusal above its form."""
    try:
        raise RAISED[kind]()
    except Exception as exc:
        refusal = pages.refused(exc)
        return HttpResponse(" | ".join(refusal.messages), status=refusal.status)


def api_crash(request: HttpRequest) -> HttpResponse:
    raise RuntimeError("boom")


urlpatterns = [
    path("raise/<str:kind>/", raising),
    path("form/<str:kind>/", form_page),
    path("api/crash/", api_crash),
    path("", include(mlops_site.urls)),
]
handler404 = "mlops_site.views.not_found"
handler500 = "mlops_site.views.server_error"

pytestmark = [pytest.mark.urls(__name__), pytest.mark.django_db]


@pytest.fixture
def alice_client(client, alice):
    client.force_login(alice)
    return client


def test_storage_down_is_the_503_page_with_retry_after_and_no_internals(alice_client):
    response = alice_client.get("/raise/storage/")

    assert response.status_code == 503
    assert response.templates[0].name == "error.html"
    assert response["Retry-After"] == str(errors.RETRY_AFTER_SECONDS)
    html = response.content.decode()
    assert "<h1>Temporarily unavailable</h1>" in html
    assert errors.STORAGE_UNAVAILABLE in html
    assert "models/x.skops" not in html
    assert 'class="topbar"' in html


def test_mlflow_down_is_the_503_page(alice_client):
    response = alice_client.get("/raise/mlflow/")

    assert response.status_code == 503
    assert errors.MLFLOW_UNAVAILABLE in response.content.decode()


def test_a_conflict_is_the_409_page_with_the_services_sentence(alice_client):
    response = alice_client.get("/raise/conflict/")

    assert response.status_code == 409
    assert "Model &#x27;cancer&#x27; has no production version yet." in response.content.decode()


def test_a_validation_refusal_outside_a_form_is_the_400_page_listing_the_problems(alice_client):
    response = alice_client.get("/raise/invalid/")

    assert response.status_code == 400
    assert "<li>A model name is required.</li>" in response.content.decode()


def test_not_found_and_not_allowed_stay_djangos_own_pages(alice_client):
    not_found = alice_client.get("/raise/not-found/")
    denied = alice_client.get("/raise/denied/")

    assert not_found.status_code == 404
    assert "<h1>Not found</h1>" in not_found.content.decode()
    assert denied.status_code == 403
    assert "Only staff may see this." in denied.content.decode()


def test_an_exception_the_mapping_does_not_know_stays_a_500(alice):
    client = Client(raise_request_exception=False)
    client.force_login(alice)

    response = client.get("/raise/bug/")

    assert response.status_code == 500
    assert "<h1>Server error</h1>" in response.content.decode()


def test_a_form_page_shows_the_mapped_status_and_messages(alice_client):
    storage_down = alice_client.get("/form/storage/")
    invalid = alice_client.get("/form/invalid/")

    assert (storage_down.status_code, storage_down.content.decode()) == (503, errors.STORAGE_UNAVAILABLE)
    assert (invalid.status_code, invalid.content.decode()) == (400, "A model name is required.")


def test_a_form_page_re_raises_what_the_mapping_does_not_know(alice_client):
    with pytest.raises(RuntimeError, match="boom"):
        alice_client.get("/form/bug/")


def test_an_unknown_api_address_is_a_404_envelope_and_a_page_address_the_404_page(alice_client):
    api = alice_client.get("/api/no-such-endpoint/")
    page = alice_client.get("/no-such-page/")

    assert error_body(api, 404, "not_found")["detail"] == "There is no API endpoint at this address."
    assert "<h1>Not found</h1>" in page.content.decode()


def test_a_crash_under_the_api_is_a_500_envelope():
    response = Client(raise_request_exception=False).get("/api/crash/")

    body = error_body(response, 500, "server_error")
    assert "boom" not in body["detail"]
