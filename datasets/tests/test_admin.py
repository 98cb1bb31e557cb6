"""Django admin for datasets: lists and a read-only version page."""

from __future__ import annotations

import pytest
from django.urls import reverse

from datasets.models import Dataset, DatasetVersion
from datasets.tests.helpers import unique_csv, upload

pytestmark = pytest.mark.django_db


def test_admin_lists_datasets_and_versions(client, admin_user):
    upload(unique_csv(), name="churn")
    upload(unique_csv(), name="churn", target=None)
    client.force_login(admin_user)

    datasets = client.get(reverse("admin:datasets_dataset_changelist"))
    versions = client.get(reverse("admin:datasets_datasetversion_changelist"), {"q": "churn"})

    assert datasets.status_code == 200
    assert versions.status_code == 200
    assert "churn v2" in versions.content.decode()


def test_admin_shows_a_version_read_only_with_its_schema(client, admin_user):
    version, _ = upload(unique_csv(), name="churn")
    client.force_login(admin_user)

    response = client.get(reverse("admin:datasets_datasetversion_change", args=[version.pk]))

    html = response.content.decode()
    assert response.status_code == 200
    assert "<td><code>label</code> (target)</td><td>categorical</td>" in html
    assert 'name="_save"' not in html
    assert reverse("datasets:version-detail", args=["churn", 1]) in html


def test_admin_cannot_add_change_or_delete_versions(client, admin_user):
    version, _ = upload(unique_csv(), name="churn")
    client.force_login(admin_user)
    delete_url = reverse("admin:datasets_datasetversion_delete", args=[version.pk])

    assert client.get(reverse("admin:datasets_datasetversion_add")).status_code == 403
    assert client.get(delete_url).status_code == 403
    assert client.post(delete_url, {"post": "yes"}).status_code == 403
    response = client.post(
        reverse("admin:datasets_datasetversion_change", args=[version.pk]), {"row_count": 1}
    )
    assert response.status_code == 403
    version.refresh_from_db()
    assert version.row_count == 20
    changelist = client.get(reverse("admin:datasets_datasetversion_changelist")).content.decode()
    assert "delete_selected" not in changelist


def test_admin_cannot_delete_a_dataset_that_has_versions(client, admin_user):
    version, _ = upload(unique_csv(), name="churn")
    client.force_login(admin_user)
    delete_url = reverse("admin:datasets_dataset_delete", args=[version.dataset.pk])

    page = client.get(delete_url)
    confirmed = client.post(delete_url, {"post": "yes"})
    bulk = client.post(
        reverse("admin:datasets_dataset_changelist"),
        {"action": "delete_selected", "_selected_action": [version.dataset.pk], "post": "yes"},
    )

    # No one may delete a version, so no one may delete the dataset holding it, however it is asked.
    assert page.status_code == confirmed.status_code == bulk.status_code == 200
    for response in (page, confirmed, bulk):
        assert "Cannot delete dataset" in response.content.decode()
    assert "<li>dataset version</li>" in page.content.decode()
    assert Dataset.objects.filter(pk=version.dataset.pk).exists()
    assert DatasetVersion.objects.filter(pk=version.pk).exists()


def test_admin_edits_a_datasets_description_but_not_its_name(client, admin_user):
    version, _ = upload(unique_csv(), name="churn")
    client.force_login(admin_user)
    url = reverse("admin:datasets_dataset_change", args=[version.dataset.pk])

    response = client.post(
        url,
        {
            "name": "renamed",
            "description": "Updated",
            "target_column": "label",
            "versions-TOTAL_FORMS": "1",
            "versions-INITIAL_FORMS": "1",
            "versions-MIN_NUM_FORMS": "0",
            "versions-MAX_NUM_FORMS": "1000",
            "versions-0-id": str(version.pk),
            "versions-0-dataset": str(version.dataset.pk),
        },
    )

    assert response.status_code == 302, response.content.decode()[-3000:]
    version.dataset.refresh_from_db()
    assert version.dataset.name == "churn"
    assert version.dataset.description == "Updated"
