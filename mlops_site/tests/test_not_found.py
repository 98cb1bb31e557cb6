"""Addresses that match nothing: a JSON 404 under /api/ naming the address with its slash; pages redirect."""

from __future__ import annotations

import json

import pytest
from rest_framework.test import APIClient

pytestmark = pytest.mark.django_db


def test_an_api_address_without_its_trailing_slash_is_a_json_404_naming_the_right_one(staff):
    client = APIClient()
    client.force_authenticate(staff)

    response = client.post("/api/datasets", {"name": "x"}, format="json")

    assert response.status_code == 404
    assert response["Content-Type"] == "application/json"
    assert "Did you mean /api/datasets/" in response.json()["detail"]


def test_pages_still_get_the_trailing_slash_redirect(client, staff):
    client.force_login(staff)

    response = client.get("/datasets")

    assert response.status_code == 301
    assert response["Location"] == "/datasets/"


def test_a_request_django_refuses_before_any_view_is_a_json_400_under_the_api(client, staff, settings):
    settings.DATA_UPLOAD_MAX_NUMBER_FIELDS = 10
    client.raise_request_exception = False
    client.force_login(staff)
    query = "&".join(f"f{n}=1" for n in range(20))

    api = client.get(f"/api/datasets/?{query}")

    assert api.status_code == 400
    assert api["Content-Type"] == "application/json"
    assert api.json()["code"] == "invalid"


@pytest.mark.worker
def test_a_request_line_too_long_for_gunicorn_is_refused_with_the_json_envelope(transactional_db, tmp_path):
    import http.client

    from tests.live_gunicorn import gunicorn_serving

    with gunicorn_serving(data_dir=tmp_path) as port:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        connection.request("GET", "/api/batch-jobs/?page=" + "9" * 9000)
        response = connection.getresponse()
        body = response.read()

    assert response.status == 400
    assert response.getheader("Content-Type") == "application/json"
    assert json.loads(body)["code"] == "bad_request"
