"""The staff dataset pages: access, upload with its error list, version detail and download."""

from __future__ import annotations

from unittest import mock

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from datasets.models import Dataset, DatasetVersion
from datasets.tests.helpers import is_stored, unique_csv, upload
from mlops_site import errors, storage

pytestmark = pytest.mark.django_db


@pytest.fixture
def version(staff):
    created, _ = upload(unique_csv(rows=15), name="churn", user=staff, description="Customers who left")
    return created


def page_urls(version):
    return [
        reverse("datasets:list"),
        reverse("datasets:detail", args=["churn"]),
        reverse("datasets:version-detail", args=["churn", 1]),
        reverse("datasets:version-download", args=["churn", 1]),
    ]


def test_anonymous_visitors_are_sent_to_the_login_page(client, version):
    for url in page_urls(version):
        response = client.get(url)
        assert response.status_code == 302, url
        assert response.url.startswith(reverse("login")), url


def test_users_without_staff_status_are_forbidden(client, alice, version):
    client.force_login(alice)
    for url in [*page_urls(version), reverse("datasets:upload")]:
        method = client.post if url.endswith("/upload/") else client.get
        assert method(url).status_code == 403, url


def test_anonymous_uploads_are_not_accepted(client):
    content = unique_csv()
    response = client.post(
        reverse("datasets:upload"),
        {"name": "churn", "target_column": "label", "file": SimpleUploadedFile("d.csv", content)},
    )
    assert response.status_code == 302
    assert DatasetVersion.objects.count() == 0


def test_staff_see_every_dataset_page(client, staff, version):
    client.force_login(staff)
    for url in page_urls(version):
        assert client.get(url).status_code == 200, url


def test_the_list_shows_each_dataset_with_its_latest_version(client, staff, version):
    upload(unique_csv(rows=12), name="churn", target=None)
    client.force_login(staff)

    response = client.get(reverse("datasets:list"))

    html = response.content.decode()
    assert 'href="/datasets/churn/"' in html
    assert 'href="/datasets/churn/versions/2/">v2</a>' in html
    assert '<td class="num">12</td>' in html
    assert 'action="/datasets/upload/"' in html


def test_the_list_page_queries_do_not_grow_with_the_number_of_datasets(
    client, staff, django_assert_max_num_queries
):
    for name in ("a1", "b2", "c3", "d4"):
        upload(unique_csv(), name=name)
    client.force_login(staff)
    # session, user, datasets (with annotations), messages: nothing per dataset
    with django_assert_max_num_queries(4):
        response = client.get(reverse("datasets:list"))
    assert response.status_code == 200


def test_staff_upload_a_new_dataset_and_land_on_its_version_page(client, staff):
    client.force_login(staff)
    content = unique_csv(rows=11)

    response = client.post(
        reverse("datasets:upload"),
        {
            "name": "churn",
            "description": "Customers",
            "target_column": "label",
            "file": SimpleUploadedFile("customers.csv", content, content_type="text/csv"),
        },
        follow=True,
    )

    assert response.redirect_chain == [(reverse("datasets:version-detail", args=["churn", 1]), 302)]
    version = DatasetVersion.objects.get()
    assert version.created_by == staff
    assert version.original_filename == "customers.csv"
    html = response.content.decode()
    assert "Stored version 1 of churn." in html
    assert version.sha256 in html


def test_uploading_the_same_file_again_says_nothing_new_was_stored(client, staff, version):
    client.force_login(staff)
    content = storage.read_bytes(version.object_key)

    response = client.post(
        reverse("datasets:upload"),
        {"name": "churn", "file": SimpleUploadedFile("again.csv", content)},
        follow=True,
    )

    assert (
        "This file is identical to version 1 of churn; nothing new was stored." in response.content.decode()
    )
    assert DatasetVersion.objects.count() == 1


def test_a_rejected_upload_lists_every_problem_and_keeps_the_form(client, staff):
    client.force_login(staff)
    content = b"a,a\n1,2\n"

    response = client.post(
        reverse("datasets:upload"),
        {"name": "new-set", "description": "kept", "file": SimpleUploadedFile("bad.csv", content)},
    )

    assert response.status_code == 400
    html = response.content.decode()
    assert "The file was not stored" in html
    assert "A target column is required for the first version of dataset &#x27;new-set&#x27;." in html
    assert "these appear more than once: &#x27;a&#x27;" in html
    assert "The file has 1 data row; at least 10 are required." in html
    assert 'value="new-set"' in html
    assert "kept</textarea>" in html
    assert Dataset.objects.count() == 0
    assert not is_stored(content)


def test_an_upload_without_a_file_is_a_form_error(client, staff):
    client.force_login(staff)

    response = client.post(reverse("datasets:upload"), {"name": "churn", "target_column": "label"})

    assert response.status_code == 400
    assert "CSV file: This field is required." in response.content.decode()


def test_an_upload_while_storage_is_down_answers_503_and_stores_nothing(client, staff):
    client.force_login(staff)
    content = unique_csv()

    with mock.patch("mlops_site.storage.put", side_effect=storage.StorageError("connection refused")):
        response = client.post(
            reverse("datasets:upload"),
            {"name": "churn", "target_column": "label", "file": SimpleUploadedFile("d.csv", content)},
        )

    assert response.status_code == 503
    html = response.content.decode()
    assert "The file was not stored" in html
    assert errors.STORAGE_UNAVAILABLE in html
    assert "connection refused" not in html
    assert response.context["form"].data["name"] == "churn"
    assert DatasetVersion.objects.count() == 0


def test_the_upload_page_only_accepts_posts(client, staff):
    client.force_login(staff)
    assert client.get(reverse("datasets:upload")).status_code == 405


def test_the_version_page_shows_the_schema_and_facts(client, staff, version):
    child, _ = upload(unique_csv(), target=None, parent=1, user=staff)
    client.force_login(staff)

    response = client.get(reverse("datasets:version-detail", args=["churn", 2]))

    html = response.content.decode()
    assert response.context["columns"][0]["name"] == "age"
    for column, kind in [
        ("age", "numeric"),
        ("income", "numeric"),
        ("city", "categorical"),
        ("label", "categorical"),
    ]:
        assert f"<code>{column}</code>" in html
        assert f'<span class="badge {kind}">{kind}</span>' in html
    assert child.sha256 in html
    assert 'href="/datasets/churn/versions/1/">v1</a>' in html
    assert "<dt>Uploaded by</dt><dd>sam-staff</dd>" in html
    assert "0%" in html


def test_the_dataset_page_lists_its_versions(client, staff, version):
    upload(unique_csv(), target=None, parent=1)
    client.force_login(staff)

    response = client.get(reverse("datasets:detail", args=["churn"]))

    assert [v.version for v in response.context["versions"]] == [2, 1]
    assert "Customers who left" in response.content.decode()


def test_unknown_datasets_and_versions_are_404(client, staff, version):
    client.force_login(staff)
    assert client.get(reverse("datasets:detail", args=["nope"])).status_code == 404
    assert client.get(reverse("datasets:version-detail", args=["churn", 9])).status_code == 404
    assert client.get(reverse("datasets:version-download", args=["nope", 1])).status_code == 404


def test_download_streams_the_stored_bytes_as_an_attachment(client, staff, version):
    client.force_login(staff)

    response = client.get(reverse("datasets:version-download", args=["churn", 1]))

    assert response.status_code == 200
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert response["Content-Disposition"] == 'attachment; filename="churn-v1.csv"'
    assert int(response["Content-Length"]) == version.size_bytes
    assert b"".join(response.streaming_content) == storage.read_bytes(version.object_key)


def test_download_of_a_missing_object_is_404(client, staff, version):
    storage.delete(version.object_key)
    client.force_login(staff)

    assert client.get(reverse("datasets:version-download", args=["churn", 1])).status_code == 404


def test_download_while_storage_is_down_is_503(client, staff, version):
    client.force_login(staff)

    with mock.patch("mlops_site.storage.default_storage.exists", side_effect=OSError("timeout")):
        response = client.get(reverse("datasets:version-download", args=["churn", 1]))

    assert response.status_code == 503
    assert response["Retry-After"] == str(errors.RETRY_AFTER_SECONDS)
    assert response.templates[0].name == "error.html"
    assert errors.STORAGE_UNAVAILABLE in response.content.decode()


def test_the_widest_dataset_allowed_is_shown_a_page_of_columns_at_a_time(client, staff, settings):
    import numpy as np
    import pandas as pd

    from training.tests.helpers import dataset_upload

    width = settings.DATASET_MAX_COLUMNS
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(12, width - 1)), columns=[f"f{i:04d}" for i in range(width - 1)])
    frame["label"] = ["a", "b", "c"] * 4
    version = dataset_upload(frame, name="wide", target="label", user=staff)
    client.force_login(staff)
    url = f"/datasets/wide/versions/{version.version}/"

    first = client.get(url).content.decode()
    last = client.get(url, {"page": "last"}).content.decode()
    nonsense = client.get(url, {"page": "not-a-number"})

    assert "<code>f0000</code>" in first
    assert "<code>f0100</code>" not in first
    assert f"({width} columns)" in first
    assert "<code>label</code>" in last
    assert len(first.encode()) < 200_000
    assert nonsense.status_code == 200
