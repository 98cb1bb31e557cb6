"""dataset_version_create: validation, content addressing, idempotency, numbering and failure cleanup."""

from __future__ import annotations

import hashlib
import io
from unittest import mock

import pytest
from django.core.exceptions import ValidationError
from django.db import DatabaseError

from datasets import services as dataset_services
from datasets.models import Dataset, DatasetVersion
from datasets.tests.helpers import is_stored, object_key_of, unique_csv, upload
from mlops_site import storage

pytestmark = pytest.mark.django_db


def assert_nothing_written(content: bytes) -> None:
    assert Dataset.objects.count() == 0
    assert DatasetVersion.objects.count() == 0
    assert not is_stored(content)


def test_it_creates_the_first_version_with_schema_profile_and_stored_file(staff):
    content = unique_csv(rows=25)

    version, created = upload(content, name="churn", target="label", user=staff, description="Customers")

    assert created is True
    assert version.version == 1
    assert version.dataset.name == "churn"
    assert version.dataset.description == "Customers"
    assert version.dataset.target_column == "label"
    assert version.dataset.created_by == staff
    assert version.created_by == staff
    assert version.sha256 == hashlib.sha256(content).hexdigest()
    assert version.object_key == f"datasets/sha256/{version.sha256[:2]}/{version.sha256}.csv"
    assert version.size_bytes == len(content)
    assert version.original_filename == "data.csv"
    assert version.row_count == 25
    assert version.column_count == 4
    assert version.schema == {
        "target_column": "label",
        "columns": [
            {"name": "age", "kind": "numeric", "dtype": "int64"},
            {"name": "income", "kind": "numeric", "dtype": "float64"},
            {"name": "city", "kind": "categorical", "dtype": "str"},
            {"name": "label", "kind": "categorical", "dtype": "str"},
        ],
    }
    assert [column["missing_ratio"] for column in version.profile["columns"]] == [0.0, 0.0, 0.0, 0.0]
    assert storage.read_bytes(version.object_key) == content


def test_it_numbers_versions_and_defaults_the_target_to_the_datasets(staff):
    first, _ = upload(unique_csv(), user=staff)
    second, created = upload(unique_csv(), target=None, user=staff)
    third, _ = upload(unique_csv(), target=None, user=staff)

    assert created is True
    assert [first.version, second.version, third.version] == [1, 2, 3]
    assert second.target_column == "label"
    assert Dataset.objects.count() == 1


def test_versions_are_numbered_per_dataset(staff):
    upload(unique_csv(), name="one")
    upload(unique_csv(), name="one")
    other, _ = upload(unique_csv(), name="two")

    assert other.version == 1


def test_uploading_identical_content_returns_the_existing_version(staff):
    content = unique_csv()
    first, created_first = upload(content, user=staff)

    again, created_again = upload(content, target=None, user=staff)

    assert created_first is True
    assert created_again is False
    assert again.pk == first.pk
    assert DatasetVersion.objects.count() == 1


def test_identical_content_in_another_dataset_is_a_new_version_sharing_the_object():
    content = unique_csv()
    first, _ = upload(content, name="first")
    second, created = upload(content, name="second")

    assert created is True
    assert second.object_key == first.object_key
    assert DatasetVersion.objects.count() == 2


def test_identical_content_with_another_target_is_refused():
    content = unique_csv()
    upload(content, target="label")

    with pytest.raises(ValidationError) as caught:
        upload(content, target="city")

    assert caught.value.messages == [
        "This file is identical to version 1 of 'churn', which uses target column 'label'; the same content "
        "cannot be stored again with target column 'city'."
    ]


def test_it_returns_the_winner_when_a_concurrent_identical_upload_commits_first():
    content = unique_csv()
    winner, _ = upload(content)
    # Both existence checks miss, as they do when the other upload commits between check and insert;
    # the unique constraint on (dataset, sha256) then decides.
    with mock.patch.object(dataset_services, "_existing_version", return_value=None) as existing_check:
        again, created = upload(content)

    assert existing_check.call_count == 2
    assert created is False
    assert again.pk == winner.pk
    assert DatasetVersion.objects.count() == 1
    assert is_stored(content)


def test_a_new_dataset_needs_a_target_column():
    content = unique_csv()
    with pytest.raises(ValidationError) as caught:
        upload(content, target=None)

    assert caught.value.messages == ["A target column is required for the first version of dataset 'churn'."]
    assert_nothing_written(content)


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("", "A dataset name is required."),
        ("My Data", "Dataset name 'My Data' is not valid."),
        ("-dash", "Dataset name '-dash' is not valid."),
        ("x" * 65, "is too long: at most 64 characters."),
        ("upload", "Dataset name 'upload' is reserved"),
    ],
)
def test_it_rejects_bad_dataset_names(name, message):
    content = unique_csv()
    with pytest.raises(ValidationError) as caught:
        upload(content, name=name)

    assert len(caught.value.messages) == 1
    assert message in caught.value.messages[0]
    assert_nothing_written(content)


REJECTED_FILES = [
    pytest.param(b"", "The file is empty.", id="empty"),
    pytest.param(b"a,label\n\x00\x01\x02\x03\n", "it contains binary data", id="binary"),
    pytest.param("city,label\nMünchen,x\n".encode("latin-1"), "byte 0xFC at offset 12", id="latin-1"),
    pytest.param(b"1,2\n3,4\n" * 10, "does not look like a header", id="no-header"),
    pytest.param(b"a,a,label\n" + b"1,2,x\n" * 12, "appear more than once: 'a'", id="duplicate-columns"),
    pytest.param(
        b"a,b\n" + b"1,2\n" * 12,
        "Target column 'label' is not in the file. Available columns: 'a', 'b'.",
        id="no-target",
    ),
    pytest.param(
        b"a,label\n1,x\n2,y\n", "The file has 2 data rows; at least 10 are required.", id="too-few-rows"
    ),
    pytest.param(b"a,gone,label\n" + b"1,,x\n" * 12, "no values at all: 'gone'", id="empty-column"),
    pytest.param(
        b"a,label\n" + b"1,x\n" * 5 + b"1,x,3\n" + b"1,x\n" * 5,
        "Row 6 (line 7) has 3 fields, expected 2.",
        id="ragged",
    ),
]


@pytest.mark.parametrize(("content", "message"), REJECTED_FILES)
def test_it_rejects_a_bad_file_and_leaves_nothing_behind(content, message):
    with pytest.raises(ValidationError) as caught:
        upload(content)

    assert any(message in problem for problem in caught.value.messages), caught.value.messages
    assert_nothing_written(content)


def test_it_rejects_a_file_over_the_size_limit(settings):
    settings.DATASET_MAX_UPLOAD_MB = 1
    content = b"a,label\n" + b"123456789,x\n" * (1024 * 1024 // 12 + 10)

    with pytest.raises(ValidationError) as caught:
        upload(content)

    assert caught.value.messages == ["The file is larger than the upload limit of 1 MB."]
    assert_nothing_written(content)


def test_it_reports_problems_of_the_request_and_the_file_together():
    content = b"a,a\n1,2\n"
    with pytest.raises(ValidationError) as caught:
        upload(content, name="Bad Name", target=None, parent=3)

    messages = caught.value.messages
    assert any("Dataset name 'Bad Name' is not valid" in message for message in messages)
    assert "A target column is required for the first version of a new dataset." in messages
    assert any("has no version 3 to use as parent" in message for message in messages)
    assert any("appear more than once: 'a'" in message for message in messages)
    assert any("1 data row; at least 10" in message for message in messages)
    assert_nothing_written(content)


def test_a_parent_given_by_number_must_exist_in_the_dataset():
    parent, _ = upload(unique_csv())
    child, _ = upload(unique_csv(), parent=1)

    assert child.parent == parent
    content = unique_csv()
    with pytest.raises(ValidationError) as caught:
        upload(content, parent=7)
    assert caught.value.messages == ["Dataset 'churn' has no version 7 to use as parent."]
    assert not is_stored(content)


def test_a_parent_from_another_dataset_is_rejected():
    foreign, _ = upload(unique_csv(), name="other")
    upload(unique_csv(), name="churn")
    content = unique_csv()

    with pytest.raises(ValidationError) as caught:
        upload(content, name="churn", parent=foreign)

    assert caught.value.messages == [
        "Parent version 'other' v1 belongs to another dataset; a parent must be a version of 'churn'."
    ]
    assert DatasetVersion.objects.count() == 2
    assert not is_stored(content)


def test_a_parent_version_object_of_the_same_dataset_is_accepted():
    parent, _ = upload(unique_csv())
    child, _ = upload(unique_csv(), parent=parent)
    assert child.parent_id == parent.pk


def test_the_description_fills_an_empty_one_but_never_replaces_it():
    upload(unique_csv())
    upload(unique_csv(), description="Filled later")
    upload(unique_csv(), description="Ignored")

    assert Dataset.objects.get().description == "Filled later"


def test_a_storage_failure_leaves_no_record_and_no_object():
    content = unique_csv()
    with (
        mock.patch("mlops_site.storage.put", side_effect=storage.StorageError("S3 is down")),
        pytest.raises(storage.StorageError),
    ):
        upload(content)

    assert_nothing_written(content)


def test_storage_that_cannot_be_reached_leaves_no_record():
    content = unique_csv()
    with (
        mock.patch("mlops_site.storage.exists", side_effect=storage.StorageError("no route to host")),
        pytest.raises(storage.StorageError),
    ):
        upload(content)

    assert Dataset.objects.count() == 0
    assert DatasetVersion.objects.count() == 0


def test_a_database_failure_after_storing_removes_the_new_object():
    content = unique_csv()
    with (
        mock.patch.object(DatasetVersion.objects, "create", side_effect=DatabaseError("disk full")),
        pytest.raises(DatabaseError),
    ):
        upload(content)

    assert_nothing_written(content)


def test_a_database_failure_keeps_an_object_that_another_dataset_uses():
    content = unique_csv()
    upload(content, name="first")

    with (
        mock.patch.object(DatasetVersion.objects, "create", side_effect=DatabaseError("disk full")),
        pytest.raises(DatabaseError),
    ):
        upload(content, name="second")

    assert is_stored(content)
    assert list(Dataset.objects.values_list("name", flat=True)) == ["first"]


def test_an_object_truncated_by_an_interrupted_write_is_replaced():
    content = unique_csv()
    storage.put_bytes(object_key_of(content), content[:10])

    version, _ = upload(content)

    assert storage.read_bytes(version.object_key) == content


def test_it_accepts_a_stream_that_cannot_seek():
    content = unique_csv()

    class OneWay(io.RawIOBase):
        def __init__(self) -> None:
            self._data = io.BytesIO(content)

        def readable(self) -> bool:
            return True

        def readinto(self, buffer) -> int:  # type: ignore[no-untyped-def]
            chunk = self._data.read(len(buffer))
            buffer[: len(chunk)] = chunk
            return len(chunk)

    version, created = dataset_services.dataset_version_create(
        name="stream", file=OneWay(), target_column="label", created_by=None
    )

    assert created is True
    assert storage.read_bytes(version.object_key) == content


def test_identical_content_with_a_bad_parent_reports_the_parent_instead_of_returning_quietly():
    content = unique_csv()
    upload(content)

    with pytest.raises(ValidationError) as caught:
        upload(content, parent=4)

    assert caught.value.messages == ["Dataset 'churn' has no version 4 to use as parent."]
