"""Dataset reads: annotated lists and a version's stored frame."""

from __future__ import annotations

import pytest
from django.http import Http404

from datasets import selectors
from datasets.tests.helpers import unique_csv, upload
from mlops_site import storage

pytestmark = pytest.mark.django_db


def test_the_dataset_list_carries_the_latest_versions_numbers():
    upload(unique_csv(rows=11), name="churn")
    upload(unique_csv(rows=17), name="churn", target=None)

    (dataset,) = selectors.dataset_list()

    assert dataset.latest_version == 2
    assert dataset.latest_row_count == 17
    assert dataset.latest_column_count == 4
    assert dataset.version_count == 2
    assert dataset.updated_at is not None


def test_getting_an_unknown_dataset_or_version_raises_404():
    upload(unique_csv(), name="churn")
    with pytest.raises(Http404):
        selectors.dataset_get(name="other")
    with pytest.raises(Http404):
        selectors.dataset_version_get(dataset_name="churn", version=2)


def test_a_versions_frame_has_the_columns_of_its_schema():
    version, _ = upload(b"\xef\xbb\xbfid,label\n" + b"".join(b"%d,x\n" % i for i in range(12)), name="bom")

    frame = selectors.dataset_version_frame(version=version)

    assert list(frame.columns) == version.column_names == ["id", "label"]
    assert len(frame) == version.row_count


def test_a_versions_frame_with_a_missing_object_raises_file_not_found():
    version, _ = upload(unique_csv(), name="churn")
    storage.delete(version.object_key)
    storage.delete(version.columnar_key)

    with pytest.raises(FileNotFoundError):
        selectors.dataset_version_frame(version=version)
