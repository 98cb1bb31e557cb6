"""Request bodies sent with `Transfer-Encoding: chunked`: read in full behind gunicorn, else a clear 411."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator

import pytest
from django.conf import settings
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from mlops_site.tests.helpers import error_body
from predictions.models import Prediction
from predictions.tests.helpers import make_model_version, trained_model
from tests.factories import make_user
from tests.live_gunicorn import gunicorn_serving


def _chunks(data: bytes, size: int = 1000) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


@pytest.fixture
def gunicorn_port(transactional_db, tmp_path) -> Iterator[int]:
    with gunicorn_serving(data_dir=tmp_path) as port:
        yield port


def _post_chunked(port: int, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        connection.request("POST", path, body=_chunks(body), headers=headers, encode_chunked=True)
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def test_a_chunked_json_body_behind_gunicorn_is_read_in_full(gunicorn_port):
    cancer = trained_model("cancer")
    make_model_version(trained=cancer, name="cancer")
    token = Token.objects.create(user=make_user("carol")).key
    body = json.dumps({"rows": cancer.sample_rows}).encode()

    status, answer = _post_chunked(
        gunicorn_port,
        "/api/models/cancer/predict/",
        body,
        {"Content-Type": "application/json", "Authorization": f"Token {token}"},
    )

    assert status == 200, answer
    assert len(answer["predictions"]) == len(cancer.sample_rows)
    assert Prediction.objects.count() == len(cancer.sample_rows)


def test_a_chunked_json_body_over_the_limit_behind_gunicorn_gets_a_413_envelope(gunicorn_port):
    body = b'{"username": "' + b"x" * settings.DATA_UPLOAD_MAX_MEMORY_SIZE + b'"}'

    status, answer = _post_chunked(
        gunicorn_port, "/api/auth/token/", body, {"Content-Type": "application/json"}
    )

    assert status == 413
    assert answer["code"] == "too_large"
    assert str(settings.DATA_UPLOAD_MAX_MEMORY_SIZE) in answer["detail"]


def test_a_chunked_body_a_server_cannot_end_gets_a_411_asking_for_content_length(db):
    response = APIClient().generic(
        "POST",
        "/api/auth/token/",
        b'{"username": "x", "password": "y"}',
        content_type="application/json",
        HTTP_TRANSFER_ENCODING="chunked",
        CONTENT_LENGTH="",
    )

    body = error_body(response, 411, "length_required")
    assert "Content-Length" in body["detail"]
