"""The dataset API: token access for staff, multipart upload, lists, details, downloads and the schema."""

from __future__ import annotations

from unittest import mock

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from drf_spectacular.drainage import GENERATOR_STATS
from drf_spectacular.generators import SchemaGenerator
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from datasets.models import Dataset, DatasetVersion
from datasets.tests.helpers import is_stored, unique_csv, upload
from mlops_site import errors, storage
from mlops_site.tests.helpers import error_body, messages_of

pytestmark = pytest.mark.django_db


def client_for(user) -> APIClient:
    client = APIClient()
    if user is not None:
        token, _ = Token.objects.get_or_create(user=user)
        client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    return client


@pytest.fixture
def api(staff) -> APIClient:
    return client_for(staff)


def post_file(client: APIClient, content: bytes, **fields):
    data = {
        "name": "churn",
        "target_column": "label",
        **fields,
        "file": SimpleUploadedFile("upload.csv", content),
    }
    return client.post("/api/datasets/", data, format="multipart")


ENDPOINTS = [
    "/api/datasets/",
    "/api/datasets/churn/",
    "/api/datasets/churn/versions/",
    "/api/datasets/churn/versions/1/",
    "/api/datasets/churn/versions/1/download/",
]


def test_anonymous_callers_are_told_to_authenticate():
    upload(unique_csv())
    client = client_for(None)
    for url in ENDPOINTS:
        response = client.get(url)
        body = error_body(response, 401, "not_authenticated")
        assert response["WWW-Authenticate"] == "Token", url
        assert body["detail"] == "Authentication credentials were not provided."
    assert post_file(client, unique_csv()).status_code == 401
    assert DatasetVersion.objects.count() == 1


def test_tokens_of_users_without_staff_status_are_refused(alice):
    upload(unique_csv())
    client = client_for(alice)
    for url in ENDPOINTS:
        assert error_body(client.get(url), 403, "permission_denied")["detail"] == (
            "You do not have permission to perform this action."
        ), url
    content = unique_csv()
    error_body(post_file(client, content), 403, "permission_denied")
    assert DatasetVersion.objects.count() == 1


def test_staff_tokens_reach_every_endpoint(api):
    upload(unique_csv())
    for url in ENDPOINTS:
        assert api.get(url).status_code == 200, url


def test_posting_a_file_creates_a_version_and_answers_201(api, staff):
    content = unique_csv(rows=14)

    response = post_file(api, content, description="Customers")

    assert response.status_code == 201, response.content
    body = response.json()
    version = DatasetVersion.objects.get()
    assert body["dataset"] == "churn"
    assert body["version"] == 1
    assert body["sha256"] == version.sha256
    assert body["row_count"] == 14
    assert body["column_count"] == 4
    assert body["target_column"] == "label"
    assert body["created_by"] == staff.username
    assert body["parent"] is None
    assert [column["name"] for column in body["columns"]] == ["age", "income", "city", "label"]
    assert body["columns"][2]["kind"] == "categorical"
    assert body["download_url"] == "http://testserver/api/datasets/churn/versions/1/download/"


def test_posting_identical_content_answers_200_with_the_existing_version(api):
    content = unique_csv()
    first = post_file(api, content)

    again = post_file(api, content, target_column="")

    assert first.status_code == 201
    assert again.status_code == 200
    assert again.json()["version"] == 1
    assert DatasetVersion.objects.count() == 1


def test_a_later_version_can_name_its_parent(api):
    post_file(api, unique_csv())

    response = post_file(api, unique_csv(), parent=1, target_column="")

    assert response.status_code == 201
    assert response.json()["version"] == 2
    assert response.json()["parent"] == 1


def test_a_rejected_file_answers_400_with_every_problem(api):
    content = b"a,a\n1,2\n"

    response = post_file(api, content, name="fresh")

    body = error_body(response, 400, "invalid")
    assert messages_of(body) == [
        "Column names must be unique; these appear more than once: 'a'.",
        "The file has 1 data row; at least 10 are required.",
        "Target column 'label' is not in the file. Available columns: 'a', 'a'.",
    ]
    assert Dataset.objects.count() == 0
    assert not is_stored(content)


def test_a_post_without_file_is_a_400_naming_the_field(api):
    response = api.post("/api/datasets/", {"name": "churn"}, format="multipart")

    body = error_body(response, 400, "invalid")
    assert [(e["field"], e["code"]) for e in body["errors"]] == [("file", "required")]


def test_a_post_while_storage_is_down_answers_503(api):
    with mock.patch("mlops_site.storage.put", side_effect=storage.StorageError("bucket unreachable")):
        response = post_file(api, unique_csv())

    assert error_body(response, 503, "storage_unavailable")["detail"] == errors.STORAGE_UNAVAILABLE
    assert response["Retry-After"] == str(errors.RETRY_AFTER_SECONDS)
    assert DatasetVersion.objects.count() == 0


def test_the_dataset_list_needs_the_same_queries_for_any_number_of_datasets(api, django_assert_num_queries):
    for name in ("alpha", "beta", "gamma"):
        upload(unique_csv(), name=name)
        upload(unique_csv(), name=name, target=None)
    Token.objects.get()  # created by the fixture

    # token with its user, page count, the annotated datasets
    with django_assert_num_queries(3):
        response = api.get("/api/datasets/")

    body = response.json()
    assert body["count"] == 3
    assert [(item["name"], item["latest_version"], item["version_count"]) for item in body["results"]] == [
        ("alpha", 2, 2),
        ("beta", 2, 2),
        ("gamma", 2, 2),
    ]


def test_the_version_list_needs_the_same_queries_for_any_number_of_versions(
    api, staff, django_assert_num_queries
):
    upload(unique_csv(), user=staff)
    for parent in (1, 2, 3):
        upload(unique_csv(), target=None, parent=parent, user=staff)

    # token with its user, the dataset, page count, versions joined with dataset, parent and uploader
    with django_assert_num_queries(4):
        response = api.get("/api/datasets/churn/versions/")

    body = response.json()
    assert [item["version"] for item in body["results"]] == [4, 3, 2, 1]
    assert [item["parent"] for item in body["results"]] == [3, 2, 1, None]


def test_a_dataset_detail_shows_its_latest_version(api):
    upload(unique_csv(rows=13), description="About churn")
    upload(unique_csv(rows=16), target=None)

    body = api.get("/api/datasets/churn/").json()

    assert body["name"] == "churn"
    assert body["description"] == "About churn"
    assert body["target_column"] == "label"
    assert body["latest_version"] == 2
    assert body["latest_row_count"] == 16


def test_unknown_datasets_and_versions_are_404(api):
    upload(unique_csv())
    assert error_body(api.get("/api/datasets/nope/"), 404, "not_found")
    assert error_body(api.get("/api/datasets/nope/versions/"), 404, "not_found")["detail"] == (
        "No dataset named 'nope'."
    )
    assert error_body(api.get("/api/datasets/churn/versions/5/"), 404, "not_found")
    assert error_body(api.get("/api/datasets/churn/versions/5/download/"), 404, "not_found")


def test_download_returns_the_stored_bytes(api):
    content = unique_csv()
    upload(content)

    response = api.get("/api/datasets/churn/versions/1/download/", HTTP_ACCEPT="text/csv")

    assert response.status_code == 200
    assert response["Content-Disposition"] == 'attachment; filename="churn-v1.csv"'
    assert b"".join(response.streaming_content) == content


def test_download_while_storage_is_down_answers_503(api):
    upload(unique_csv())

    with mock.patch("mlops_site.storage.default_storage.exists", side_effect=OSError("timeout")):
        response = api.get("/api/datasets/churn/versions/1/download/")

    assert error_body(response, 503, "storage_unavailable")["detail"] == errors.STORAGE_UNAVAILABLE


def test_the_openapi_schema_documents_the_dataset_endpoints_without_warnings():
    GENERATOR_STATS.reset()
    with GENERATOR_STATS.silence():
        schema = SchemaGenerator().get_schema(request=None, public=True)

    dataset_messages = [
        message
        for message in [*GENERATOR_STATS._warn_cache, *GENERATOR_STATS._error_cache]
        if "dataset" in message.lower()
    ]
    assert dataset_messages == []
    paths = schema["paths"]
    assert set(paths["/api/datasets/"]) == {"get", "post"}
    assert "multipart/form-data" in paths["/api/datasets/"]["post"]["requestBody"]["content"]
    assert set(paths["/api/datasets/{name}/"]) == {"get", "delete"}
    version = paths["/api/datasets/{dataset_name}/versions/{version}/"]
    assert set(version) == {"get", "delete"}
    assert {"204", "404", "409"} <= set(version["delete"]["responses"])
    download = paths["/api/datasets/{dataset_name}/versions/{version}/download/"]["get"]
    assert "text/csv" in download["responses"]["200"]["content"]
