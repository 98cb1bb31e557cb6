"""Concurrent uploads on PostgreSQL: row locks and unique constraints keep numbers and content unique."""

from __future__ import annotations

import threading

import pytest
from django.db import connection

from datasets.models import DatasetVersion
from datasets.tests.helpers import unique_csv, upload

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def run_concurrently(contents: list[bytes]) -> list[tuple[DatasetVersion, bool]]:
    barrier = threading.Barrier(len(contents))
    results: dict[int, tuple[DatasetVersion, bool]] = {}
    errors: list[BaseException] = []

    def worker(index: int, content: bytes) -> None:
        try:
            barrier.wait()
            results[index] = upload(content, name="race")
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=worker, args=(i, c)) for i, c in enumerate(contents)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    if errors:
        raise errors[0]
    return [results[index] for index in range(len(contents))]


def test_identical_uploads_racing_for_a_new_dataset_create_one_version():
    content = unique_csv()

    results = run_concurrently([content] * 4)

    assert len({version.pk for version, _ in results}) == 1
    assert sorted(created for _, created in results) == [False, False, False, True]
    assert DatasetVersion.objects.count() == 1


def test_different_uploads_racing_get_consecutive_version_numbers():
    results = run_concurrently([unique_csv() for _ in range(4)])

    assert sorted(version.version for version, _ in results) == [1, 2, 3, 4]
    assert all(created for _, created in results)
