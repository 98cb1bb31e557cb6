"""The 403, 404 and 500 pages."""

from __future__ import annotations

import pytest
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.template import loader
from django.test import Client
from django.urls import include, path

import mlops_site.urls


def forbidden(request: HttpRequest) -> HttpResponse:
    raise PermissionDenied("Only staff may see this.")


def broken(request: HttpRequest) -> HttpResponse:
    raise RuntimeError("boom")


urlpatterns = [
    path("forbidden/", forbidden),
    path("broken/", broken),
    path("", include(mlops_site.urls)),
]

pytestmark = [pytest.mark.urls(__name__), pytest.mark.django_db]


@pytest.fixture
def alice_client(client, alice):
    client.force_login(alice)
    return client


def test_a_missing_page_shows_the_404_page_with_the_site_chrome(alice_client):
    response = alice_client.get("/no-such-page/")

    assert response.status_code == 404
    html = response.content.decode()
    assert "<h1>Not found</h1>" in html
    assert "/no-such-page/" in html
    assert 'class="topbar"' in html
    assert "alice" in html


def test_the_404_page_escapes_the_path(client):
    response = client.get("/<script>x</script>/")

    assert response.status_code == 404
    assert b"<script>x</script>" not in response.content


def test_a_refused_page_shows_the_403_page(alice_client):
    response = alice_client.get("/forbidden/")

    assert response.status_code == 403
    html = response.content.decode()
    assert "<h1>Not allowed</h1>" in html
    assert "Only staff may see this." in html


def test_a_crash_shows_the_500_page(alice):
    client = Client(raise_request_exception=False)
    client.force_login(alice)

    response = client.get("/broken/")

    assert response.status_code == 500
    html = response.content.decode()
    assert "<h1>Server error</h1>" in html
    assert "/static/css/site.css" in html
    assert "boom" not in html


def test_the_500_page_needs_no_context_no_urls_and_no_database(django_assert_num_queries, monkeypatch):
    # Whatever broke the request (URLconf, database, context processors) must not also break this page.
    def no_reversing(*args, **kwargs):
        raise AssertionError("500.html reversed a URL")

    monkeypatch.setattr("django.urls.reverse", no_reversing)

    with django_assert_num_queries(0):
        html = loader.get_template("500.html").render()

    assert "<h1>Server error</h1>" in html
