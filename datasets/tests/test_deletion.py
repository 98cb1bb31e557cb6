"""Deleting dataset versions and datasets that nothing uses: the service, the pages and the API.

A version is kept while a training run, a model version, a retraining or a derived version uses it; the
refusal names them. The stored files go after the commit, and only when no other version holds the bytes.
"""

from __future__ import annotations

import pytest
from django.urls import reverse

from datasets import services
from datasets.models import Dataset, DatasetVersion
from datasets.tests.helpers import is_stored, object_key_of, unique_csv, upload
from mlops_site import storage
from mlops_site.tests.helpers import error_body
from tests.factories import make_api_client
from training import services as training_services
from training.models import TrainingRun

pytestmark = pytest.mark.django_db


def train_on(version: DatasetVersion, staff) -> TrainingRun:
    return training_services.training_run_create(
        dataset_version=version,
        model_name="churn-model",
        algorithm="random_forest",
        params={},
        created_by=staff,
        enqueue=False,
    )


@pytest.fixture
def content() -> bytes:
    return unique_csv()


@pytest.fixture
def two_versions(staff, content):
    first, _ = upload(content, name="churn", user=staff)
    second, _ = upload(unique_csv(), name="churn", target=None, user=staff)
    return first, second


# The service


def test_a_version_nothing_uses_is_deleted_and_its_files_only_after_the_commit(
    two_versions, content, django_capture_on_commit_callbacks
):
    first, second = two_versions
    columnar_key = first.columnar_key
    assert columnar_key
    assert storage.exists(columnar_key)

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        deletion = services.dataset_version_delete(version=first)
        assert is_stored(content), "nothing is removed before the rows are gone for good"

    assert deletion == services.Deletion(dataset_name="churn", versions=(1,), dataset_deleted=False)
    assert not DatasetVersion.objects.filter(pk=first.pk).exists()
    assert is_stored(content)
    for callback in callbacks:
        callback()
    assert not is_stored(content)
    assert not storage.exists(columnar_key)
    assert DatasetVersion.objects.filter(pk=second.pk).exists()


def test_a_deleted_versions_number_is_never_given_again(
    two_versions, staff, django_capture_on_commit_callbacks
):
    _, second = two_versions
    with django_capture_on_commit_callbacks(execute=True):
        services.dataset_version_delete(version=second)

    third, created = upload(unique_csv(), name="churn", target=None, user=staff)

    assert created
    assert third.version == 3


def test_deleting_the_last_version_deletes_the_dataset(staff, content, django_capture_on_commit_callbacks):
    only, _ = upload(content, name="churn", user=staff)

    with django_capture_on_commit_callbacks(execute=True):
        deletion = services.dataset_version_delete(version=only)

    assert deletion.dataset_deleted
    assert not Dataset.objects.exists()
    assert not is_stored(content)


def test_the_file_stays_while_another_dataset_holds_the_same_bytes(
    staff, content, django_capture_on_commit_callbacks
):
    mine, _ = upload(content, name="churn", user=staff)
    upload(content, name="churn-copy", user=staff)

    with django_capture_on_commit_callbacks(execute=True):
        services.dataset_version_delete(version=mine)

    assert is_stored(content)
    assert DatasetVersion.objects.get().object_key == object_key_of(content)


def test_a_version_a_training_run_uses_is_refused_naming_the_run(two_versions, staff):
    first, _ = two_versions
    run = train_on(first, staff)

    with pytest.raises(services.DatasetInUse) as refused:
        services.dataset_version_delete(version=first)

    assert refused.value.status == 409
    assert f"churn v1 cannot be deleted: it is used by 1 training run: {run}" in refused.value.detail
    assert [item["code"] for item in refused.value.errors] == ["in_use"]
    assert DatasetVersion.objects.filter(pk=first.pk).exists()


def test_a_version_a_model_version_records_is_refused_naming_it(two_versions):
    from training.tests.helpers import model_make, version_make

    first, _ = two_versions
    recorded = version_make(model_make("churn-model"), 1)
    recorded.dataset_version = first
    recorded.save(update_fields=["dataset_version"])

    with pytest.raises(services.DatasetInUse, match="1 model version: churn-model v1"):
        services.dataset_version_delete(version=first)


def test_a_version_a_derived_version_uses_is_refused(staff):
    parent, _ = upload(unique_csv(), name="churn", user=staff)
    upload(unique_csv(), name="churn", target=None, parent=1, user=staff)

    with pytest.raises(services.DatasetInUse, match="1 derived dataset version: churn v2"):
        services.dataset_version_delete(version=parent)


def test_a_dataset_is_deleted_whole_with_its_derived_versions(staff, django_capture_on_commit_callbacks):
    contents = [unique_csv(), unique_csv()]
    upload(contents[0], name="churn", user=staff)
    upload(contents[1], name="churn", target=None, parent=1, user=staff)
    dataset = Dataset.objects.get()

    with django_capture_on_commit_callbacks(execute=True):
        deletion = services.dataset_delete(dataset=dataset)

    assert deletion.versions == (1, 2)
    assert not Dataset.objects.exists()
    assert not DatasetVersion.objects.exists()
    assert not any(is_stored(content) for content in contents)


def test_a_dataset_whose_version_trained_a_run_is_refused_whole(two_versions, staff):
    _, second = two_versions
    train_on(second, staff)

    with pytest.raises(services.DatasetInUse, match="The dataset churn cannot be deleted"):
        services.dataset_delete(dataset=second.dataset)

    assert DatasetVersion.objects.count() == 2


def test_a_training_run_on_a_version_deleted_meanwhile_is_refused_not_left_dangling(two_versions, staff):
    first, _ = two_versions
    stale = DatasetVersion.objects.get(pk=first.pk)
    services.dataset_version_delete(version=first)

    with pytest.raises(Exception) as refused:
        train_on(stale, staff)

    assert "was deleted" in str(refused.value)
    assert not TrainingRun.objects.exists()


# The pages


def test_staff_delete_a_version_after_a_confirmation_page(
    client, staff, two_versions, content, django_capture_on_commit_callbacks
):
    first, _ = two_versions
    client.force_login(staff)
    url = reverse("datasets:version-delete", args=["churn", 1])

    version_page = client.get(reverse("datasets:version-detail", args=["churn", 1])).content.decode()
    confirmation = client.get(url)
    assert f'href="{url}"' in version_page
    assert confirmation.status_code == 200
    assert f'method="post" action="{url}"' in confirmation.content.decode()
    assert DatasetVersion.objects.filter(pk=first.pk).exists(), "a GET deletes nothing"

    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(url, follow=True)

    assert response.redirect_chain[-1][0] == reverse("datasets:detail", args=["churn"])
    assert "Deleted version 1 of churn." in response.content.decode()
    assert not DatasetVersion.objects.filter(pk=first.pk).exists()
    assert not is_stored(content)


def test_deleting_the_last_version_on_its_page_says_the_dataset_goes_too(client, staff, content):
    upload(content, name="churn", user=staff)
    client.force_login(staff)
    url = reverse("datasets:version-delete", args=["churn", 1])

    confirmation = client.get(url).content.decode()
    response = client.post(url, follow=True)

    assert "It is the last version of churn, so the dataset is deleted with it." in confirmation
    assert response.redirect_chain[-1][0] == reverse("datasets:list")
    assert "Deleted churn v1, its last version, and with it the dataset churn." in response.content.decode()
    assert not Dataset.objects.exists()


def test_the_page_says_what_uses_a_version_and_offers_no_delete(client, staff, two_versions):
    first, _ = two_versions
    run = train_on(first, staff)
    client.force_login(staff)
    url = reverse("datasets:version-delete", args=["churn", 1])

    version_page = client.get(reverse("datasets:version-detail", args=["churn", 1])).content.decode()
    confirmation = client.get(url).content.decode()
    refused = client.post(url)

    assert f'href="{url}"' not in version_page
    assert "Kept because it is used by 1 training run" in version_page
    assert f"used by 1 training run: {run}" in confirmation
    assert f'action="{url}"' not in confirmation
    assert refused.status_code == 409
    assert "cannot be deleted" in refused.content.decode()
    assert DatasetVersion.objects.filter(pk=first.pk).exists()


def test_staff_delete_a_whole_dataset_from_its_page(client, staff, two_versions):
    client.force_login(staff)
    url = reverse("datasets:delete", args=["churn"])

    dataset_page = client.get(reverse("datasets:detail", args=["churn"])).content.decode()
    confirmation = client.get(url).content.decode()
    response = client.post(url)

    assert f'href="{url}"' in dataset_page
    assert "churn v1" in confirmation
    assert "churn v2" in confirmation
    assert response.status_code == 302
    assert response.url == reverse("datasets:list")
    assert not Dataset.objects.exists()


def test_users_without_staff_status_cannot_delete(client, alice, two_versions):
    client.force_login(alice)

    for url in (
        reverse("datasets:version-delete", args=["churn", 1]),
        reverse("datasets:delete", args=["churn"]),
    ):
        assert client.get(url).status_code == 403
        assert client.post(url).status_code == 403
    client.logout()
    assert client.post(reverse("datasets:delete", args=["churn"])).status_code == 302
    assert DatasetVersion.objects.count() == 2


def test_deleting_an_unknown_version_or_dataset_is_404(client, staff, two_versions):
    client.force_login(staff)

    assert client.post(reverse("datasets:version-delete", args=["churn", 9])).status_code == 404
    assert client.post(reverse("datasets:delete", args=["nope"])).status_code == 404
    assert client.put(reverse("datasets:delete", args=["churn"])).status_code == 405


# The API


def test_the_api_deletes_a_version_nothing_uses(staff, two_versions):
    api = make_api_client(staff)

    response = api.delete("/api/datasets/churn/versions/2/")

    assert response.status_code == 204
    assert list(DatasetVersion.objects.values_list("version", flat=True)) == [1]


def test_the_api_answers_409_naming_what_uses_a_version(staff, two_versions):
    first, _ = two_versions
    run = train_on(first, staff)
    api = make_api_client(staff)

    version = error_body(api.delete("/api/datasets/churn/versions/1/"), 409, "in_use")
    dataset = error_body(api.delete("/api/datasets/churn/"), 409, "in_use")

    assert version["errors"][0]["message"] == f"1 training run: {run}"
    assert "The dataset churn cannot be deleted" in dataset["detail"]
    assert DatasetVersion.objects.count() == 2


def test_the_api_deletes_a_dataset_and_refuses_non_staff(staff, alice, two_versions):
    assert make_api_client(alice).delete("/api/datasets/churn/").status_code == 403
    assert make_api_client(None).delete("/api/datasets/churn/").status_code == 401
    assert make_api_client(staff).delete("/api/datasets/churn/versions/7/").status_code == 404

    assert make_api_client(staff).delete("/api/datasets/churn/").status_code == 204
    assert not Dataset.objects.exists()
