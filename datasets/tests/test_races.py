"""Races on PostgreSQL: row locks and unique constraints keep numbers and content unique, and a deletion
and a training run on the same version from leaving a dangling reference."""

from __future__ import annotations

import threading
from unittest import mock

import pytest
from django.core.exceptions import ValidationError
from django.db import connection

from datasets import selectors, services
from datasets.models import DatasetVersion
from datasets.tests.helpers import unique_csv, upload
from training import services as training_services
from training import validation
from training.models import TrainingRun

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


# A deletion racing a training run on the same version: the row lock orders them, so either the run is
# recorded and the deletion refused, or the version is gone and the run refused; never a run pointing at
# a deleted version.


def _in_thread(target) -> tuple[threading.Thread, list]:
    outcome: list = []

    def run() -> None:
        try:
            outcome.append(target())
        except BaseException as exc:
            outcome.append(exc)
        finally:
            connection.close()

    thread = threading.Thread(target=run)
    thread.start()
    return thread, outcome


def _train(version: DatasetVersion):
    return training_services.training_run_create(
        dataset_version=version,
        model_name="race-model",
        algorithm="random_forest",
        params={},
        created_by=None,
        enqueue=False,
    )


def test_a_deletion_waits_for_a_training_run_that_locked_the_version_and_then_refuses():
    version, _ = upload(unique_csv(), name="race")
    locked, release = threading.Event(), threading.Event()
    original = validation.model_problems

    def slow_model_problems(**kwargs):
        locked.set()
        release.wait(10)
        return original(**kwargs)

    # The run's checks of its model run inside the transaction that locked the dataset version.
    with mock.patch.object(validation, "model_problems", slow_model_problems):
        trainer, trained = _in_thread(lambda: _train(version))
        assert locked.wait(10)
        deleter, deleted = _in_thread(lambda: services.dataset_version_delete(version=version))
        deleter.join(timeout=1)
        assert deleter.is_alive(), "the deletion waits for the run's lock"
        release.set()
        trainer.join(timeout=30)
        deleter.join(timeout=30)

    assert isinstance(trained[0], TrainingRun)
    assert isinstance(deleted[0], services.DatasetInUse)
    assert DatasetVersion.objects.filter(pk=version.pk).exists()


def test_a_training_run_waits_for_a_deletion_that_locked_the_version_and_then_refuses():
    version, _ = upload(unique_csv(), name="race")
    locked, release = threading.Event(), threading.Event()
    original = selectors.dataset_version_references

    def slow_references(**kwargs):
        locked.set()
        release.wait(10)
        return original(**kwargs)

    with mock.patch.object(selectors, "dataset_version_references", slow_references):
        deleter, deleted = _in_thread(lambda: services.dataset_version_delete(version=version))
        assert locked.wait(10)
        trainer, trained = _in_thread(lambda: _train(version))
        trainer.join(timeout=1)
        assert trainer.is_alive(), "the run waits for the deletion's lock"
        release.set()
        deleter.join(timeout=30)
        trainer.join(timeout=30)

    assert isinstance(deleted[0], services.Deletion)
    assert isinstance(trained[0], ValidationError)
    assert "was deleted" in str(trained[0])
    assert not TrainingRun.objects.exists()
