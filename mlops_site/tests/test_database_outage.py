"""Failures that are not bugs are never a 500: a database outage is a retryable 503, a cut-off body a 400."""

from __future__ import annotations

from unittest import mock

import pytest
from django.db import OperationalError

pytestmark = pytest.mark.django_db


def test_a_database_outage_outside_any_view_is_a_503_with_retry_after(client, staff):
    client.raise_request_exception = False
    client.force_login(staff)
    with mock.patch(
        "django.contrib.sessions.backends.db.SessionStore.load",
        side_effect=OperationalError("server closed the connection"),
    ):
        page = client.get("/datasets/")
        api = client.get("/api/datasets/")

    assert page.status_code == 503
    assert page["Retry-After"] == "30"
    assert api.status_code == 503
    assert api.json()["code"] == "database_unavailable"


def test_a_database_outage_inside_an_api_view_is_a_503_envelope(client, staff):
    client.force_login(staff)
    with mock.patch("datasets.selectors.dataset_list", side_effect=OperationalError("connection refused")):
        response = client.get("/api/datasets/")

    assert response.status_code == 503
    assert response["Retry-After"] == "30"
    assert response.json() == {
        "detail": "The database is unavailable. Please try again shortly.",
        "code": "database_unavailable",
        "errors": [],
    }


def test_a_body_that_stops_arriving_is_a_400_not_a_500(client, staff):
    from django.http import UnreadablePostError

    client.raise_request_exception = False
    client.force_login(staff)
    with mock.patch(
        "django.core.handlers.wsgi.WSGIRequest.read", side_effect=UnreadablePostError("connection reset")
    ):
        page = client.post("/training/new", {"model_name": "x"})
        api = client.post("/api/datasets/", {"name": "x"})

    assert page.status_code == 400
    assert api.status_code == 400
    assert api.json()["code"] == "incomplete_body"
