"""Django admin for datasets: lists, a read-only version page, and deleting what nothing uses."""

from __future__ import annotations

from unittest import mock

import pytest
from django.urls import reverse

from datasets import services
from datasets.models import Dataset, DatasetVersion
from datasets.tests.helpers import is_stored, unique_csv, upload
from training import services as training_services
from training.models import TrainingRun

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


def test_admin_cannot_add_or_change_versions(client, admin_user):
    version, _ = upload(unique_csv(), name="churn")
    client.force_login(admin_user)

    assert client.get(reverse("admin:datasets_datasetversion_add")).status_code == 403
    response = client.post(
        reverse("admin:datasets_datasetversion_change", args=[version.pk]), {"row_count": 1}
    )
    assert response.status_code == 403
    version.refresh_from_db()
    assert version.row_count == 20


def train_on(version: DatasetVersion, user) -> TrainingRun:
    return training_services.training_run_create(
        dataset_version=version,
        model_name="churn-model",
        algorithm="random_forest",
        params={},
        created_by=user,
        enqueue=False,
    )


def test_delete_selected_datasets_deletes_those_nothing_uses_and_names_what_uses_the_others(
    client, admin_user, django_capture_on_commit_callbacks
):
    content = unique_csv()
    free, _ = upload(content, name="churn")
    used, _ = upload(unique_csv(), name="iris")
    run = train_on(used, admin_user)
    client.force_login(admin_user)
    changelist = reverse("admin:datasets_dataset_changelist")
    selected = {"action": "delete_selected", "_selected_action": [free.dataset.pk, used.dataset.pk]}

    confirmation = client.post(changelist, selected)
    assert Dataset.objects.count() == 2, "the confirmation page deletes nothing"
    with django_capture_on_commit_callbacks(execute=True):
        done = client.post(changelist, {**selected, "post": "yes"}, follow=True)

    page = confirmation.content.decode()
    assert confirmation.status_code == 200
    assert "<li>churn, with churn v1</li>" in page
    assert f"iris cannot be deleted: it is used by 1 training run: {run}" in page
    result = done.content.decode()
    assert "Deleted churn." in result
    assert "iris cannot be deleted" in result
    assert list(Dataset.objects.values_list("name", flat=True)) == ["iris"]
    assert not is_stored(content)


def test_a_datasets_delete_page_names_what_uses_it_and_deletes_one_nothing_uses(client, admin_user):
    used, _ = upload(unique_csv(), name="iris")
    free, _ = upload(unique_csv(), name="churn")
    train_on(used, admin_user)
    client.force_login(admin_user)

    refused = client.post(reverse("admin:datasets_dataset_delete", args=[used.dataset.pk]), {"post": "yes"})
    confirmed = client.post(reverse("admin:datasets_dataset_delete", args=[free.dataset.pk]), {"post": "yes"})

    assert refused.status_code == 200
    assert "iris cannot be deleted: it is used by 1 training run" in refused.content.decode()
    assert confirmed.status_code == 302
    assert list(Dataset.objects.values_list("name", flat=True)) == ["iris"]


def test_staff_without_the_delete_permission_cannot_delete_datasets(client, staff):
    from django.contrib.auth.models import Permission

    version, _ = upload(unique_csv(), name="churn")
    staff.user_permissions.add(
        *Permission.objects.filter(codename__in=["view_dataset", "view_datasetversion"])
    )
    client.force_login(staff)
    changelist = reverse("admin:datasets_dataset_changelist")

    listing = client.get(changelist).content.decode()
    action = client.post(
        changelist, {"action": "delete_selected", "_selected_action": [version.dataset.pk], "post": "yes"}
    )
    page = client.get(reverse("admin:datasets_dataset_delete", args=[version.dataset.pk]))

    assert 'value="delete_selected"' not in listing
    assert page.status_code == 403
    assert action.status_code in (200, 302)
    assert Dataset.objects.count() == 1


def test_a_version_nothing_uses_is_deleted_from_the_version_admin(client, admin_user):
    upload(unique_csv(), name="churn")
    second, _ = upload(unique_csv(), name="churn", target=None)
    used = DatasetVersion.objects.get(version=1)
    train_on(used, admin_user)
    client.force_login(admin_user)
    changelist = reverse("admin:datasets_datasetversion_changelist")

    client.post(
        changelist, {"action": "delete_selected", "_selected_action": [used.pk, second.pk], "post": "yes"}
    )

    assert list(DatasetVersion.objects.values_list("version", flat=True)) == [1]


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


def test_a_dataset_used_between_the_delete_page_and_its_confirmation_is_kept_with_the_reason(
    client, admin_user
):
    version, _ = upload(unique_csv(), name="churn")
    url = reverse("admin:datasets_dataset_delete", args=[version.dataset.pk])
    client.force_login(admin_user)
    refusal = services.DatasetInUse(
        "The dataset churn cannot be deleted: it is used by 1 training run: run 9."
    )

    with mock.patch.object(services, "dataset_delete", side_effect=refusal):
        response = client.post(url, {"post": "yes"}, follow=True)

    html = response.content.decode()
    assert response.redirect_chain[0][0] == url
    assert "it is used by 1 training run: run 9." in html
    assert "deleted successfully" not in html
    assert Dataset.objects.filter(pk=version.dataset.pk).exists()
