"""Round trip of a dataset version through a real S3 server (runs where AWS_STORAGE_BUCKET_NAME is set)."""

from __future__ import annotations

import hashlib

import pytest
from django.urls import reverse

from datasets.tests.helpers import unique_csv, upload
from mlops_site import storage

pytestmark = [pytest.mark.s3, pytest.mark.django_db]


def test_a_version_stored_in_s3_reads_back_and_downloads_byte_for_byte(client, staff, settings):
    content = unique_csv(rows=30)

    version, created = upload(content, name="s3-roundtrip", user=staff)

    assert created is True
    assert settings.STORAGES["default"]["BACKEND"] == "storages.backends.s3.S3Storage"
    stored = storage.read_bytes(version.object_key)
    assert stored == content
    assert hashlib.sha256(stored).hexdigest() == version.sha256
    assert storage.sha256_of(version.object_key) == version.sha256
    client.force_login(staff)
    response = client.get(reverse("datasets:version-download", args=["s3-roundtrip", version.version]))
    assert response.status_code == 200
    assert b"".join(response.streaming_content) == content
