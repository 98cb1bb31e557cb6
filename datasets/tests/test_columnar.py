"""The columnar copy: written at upload when it reads back exactly, read instead of the CSV, checked."""

from __future__ import annotations

import io

import pandas as pd
import pytest
from django.db import DatabaseError

from datasets import columnar, selectors
from datasets.models import DatasetVersion
from datasets.tests.helpers import unique_csv, upload
from ml.errors import ArtifactError
from mlops_site import storage

pytestmark = pytest.mark.django_db

# Quoted commas, a BOM-less accent, gaps in numbers, text and booleans, integers that gain a gap.
TRICKY_CSV = (
    "age,income,city,member,note,label\n"
    '31,52000.5,"Berlin, Mitte",True,"said ""hi""",yes\n'
    "45,,Paris,False,,no\n"
    ",61000.25,Ré,True,x,yes\n"
    '52,48000,,False,"two\nlines",no\n'
).encode()


def csv_frame(content: bytes) -> pd.DataFrame:
    return pd.read_csv(io.BytesIO(content), encoding="utf-8-sig", low_memory=False)


def test_an_upload_stores_a_columnar_copy_that_reads_back_as_the_csv_parses(staff, settings):
    settings.DATASET_MIN_ROWS = 1
    version, _ = upload(TRICKY_CSV, user=staff)

    assert (
        version.columnar_key
        == f"datasets/columnar/{version.columnar_sha256[:2]}/{version.columnar_sha256}.arrow"
    )
    assert storage.exists(version.columnar_key)
    pd.testing.assert_frame_equal(
        selectors.dataset_version_frame(version=version), csv_frame(TRICKY_CSV), check_exact=True
    )


def test_a_version_without_a_copy_is_read_from_its_csv(staff):
    content = unique_csv()
    version, _ = upload(content, user=staff)
    DatasetVersion.objects.filter(pk=version.pk).update(columnar_key="", columnar_sha256="")
    version.refresh_from_db()

    pd.testing.assert_frame_equal(selectors.dataset_version_frame(version=version), csv_frame(content))


def test_a_column_arrow_cannot_hold_keeps_the_csv_as_the_only_copy(staff, settings):
    settings.DATASET_MIN_ROWS = 1
    # Wider than a 64-bit integer: pandas keeps Python ints, which Arrow refuses.
    content = b"big,label\n99999999999999999999,yes\n-5,no\n7,yes\n"

    version, created = upload(content, user=staff)

    assert created
    assert (version.columnar_key, version.columnar_sha256) == ("", "")
    assert selectors.dataset_version_frame(version=version)["big"].tolist() == [99999999999999999999, -5, 7]


def test_a_damaged_columnar_copy_is_refused(staff):
    version, _ = upload(unique_csv(), user=staff)
    frame = columnar.frame_read(storage.read_bytes(version.columnar_key))
    frame.loc[0, "income"] = 1.0
    storage.delete(version.columnar_key)
    storage.put_bytes(version.columnar_key, columnar.columnar_bytes(frame))

    with pytest.raises(ArtifactError, match="does not match its recorded sha256"):
        selectors.dataset_version_frame(version=version)


def test_a_missing_columnar_copy_is_reported_by_its_key(staff):
    version, _ = upload(unique_csv(), user=staff)
    storage.delete(version.columnar_key)

    with pytest.raises(FileNotFoundError, match=version.columnar_key):
        selectors.dataset_version_frame(version=version)


def test_two_datasets_with_the_same_file_share_one_copy(staff):
    content = unique_csv()
    first, _ = upload(content, name="first", user=staff)
    second, _ = upload(content, name="second", user=staff)

    assert first.columnar_key == second.columnar_key


def test_a_database_failure_after_storing_removes_the_new_copy_too(staff, monkeypatch):
    content = unique_csv()
    stored: list[str] = []
    real_put = storage.put
    monkeypatch.setattr(storage, "put", lambda key, file: (stored.append(key), real_put(key, file))[1])
    monkeypatch.setattr(
        DatasetVersion.objects, "create", lambda **kwargs: (_ for _ in ()).throw(DatabaseError("disk full"))
    )

    with pytest.raises(DatabaseError):
        upload(content, user=staff)

    assert len(stored) == 2
    assert stored[1].startswith("datasets/columnar/")
    assert not any(storage.exists(key) for key in stored)
