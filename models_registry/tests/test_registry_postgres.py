"""Row locks on PostgreSQL: one production version under concurrent promotions, and a model deleted only
without versions while a version is being recorded."""

from __future__ import annotations

import threading
from unittest import mock

import pytest
from django.db import IntegrityError, connection, transaction

from models_registry import services as registry_services
from models_registry import transition_services
from models_registry.models import ModelVersion, RegisteredModel, StageTransition
from training.tests.helpers import model_make, version_make

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

WORKERS = 6


def run_together(work, count: int) -> list[BaseException | None]:
    """Start `count` threads, each with its own database connection, at the same moment."""
    barrier = threading.Barrier(count)
    outcomes: list[BaseException | None] = [None] * count

    def target(index: int) -> None:
        try:
            barrier.wait(timeout=10)
            work(index)
        except BaseException as exc:  # reported to the test thread
            outcomes[index] = exc
        finally:
            connection.close()

    threads = [threading.Thread(target=target, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads)
    return outcomes


def test_the_constraint_is_a_partial_unique_index_in_postgresql():
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT indexdef FROM pg_indexes WHERE indexname = %s", ["one_production_version_per_model"]
        )
        (definition,) = cursor.fetchone()
    assert "UNIQUE INDEX" in definition
    assert "(registered_model_id)" in definition
    assert "'production'" in definition


def test_concurrent_promotions_of_different_versions_leave_exactly_one_in_production(staff):
    registered = model_make()
    versions = [version_make(registered, number) for number in range(1, WORKERS + 1)]

    with mock.patch.object(registry_services, "model_aliases_sync_on_commit"):
        outcomes = run_together(
            lambda i: transition_services.model_version_transition(
                model_version=versions[i], to_stage="production", user=staff, reason=f"thread {i}"
            ),
            WORKERS,
        )

    assert outcomes == [None] * WORKERS
    assert ModelVersion.objects.filter(registered_model=registered, stage="production").count() == 1
    assert ModelVersion.objects.filter(registered_model=registered, stage="archived").count() == WORKERS - 1
    # Serialised by the row lock: each promotion archived the one before it.
    assert StageTransition.objects.filter(to_stage="production").count() == WORKERS
    assert StageTransition.objects.filter(from_stage="production", to_stage="archived").count() == WORKERS - 1


def test_the_database_alone_refuses_concurrent_writes_of_a_second_production_row():
    registered = model_make()
    versions = [version_make(registered, number) for number in range(1, WORKERS + 1)]

    def promote_bypassing_the_service(index: int) -> None:
        with transaction.atomic():
            ModelVersion.objects.filter(pk=versions[index].pk).update(stage="production")

    outcomes = run_together(promote_bypassing_the_service, WORKERS)

    assert sum(outcome is None for outcome in outcomes) == 1
    assert all(isinstance(outcome, IntegrityError) for outcome in outcomes if outcome is not None)
    assert ModelVersion.objects.filter(registered_model=registered, stage="production").count() == 1


def test_concurrent_rollbacks_and_promotions_keep_one_production_version(staff):
    registered = model_make()
    versions = [version_make(registered, number) for number in range(1, WORKERS + 1)]
    with mock.patch.object(registry_services, "model_aliases_sync_on_commit"):
        transition_services.model_version_transition(
            model_version=versions[0], to_stage="production", user=staff
        )
        transition_services.model_version_transition(
            model_version=versions[1], to_stage="production", user=staff
        )

        def act(index: int) -> None:
            if index % 2:
                transition_services.model_version_rollback(registered_model=registered, user=staff)
            else:
                transition_services.model_version_transition(
                    model_version=versions[index + 2 if index + 2 < WORKERS else index],
                    to_stage="production",
                    user=staff,
                )

        run_together(act, WORKERS)

    assert ModelVersion.objects.filter(registered_model=registered, stage="production").count() == 1


def test_a_delete_and_a_version_recorded_at_once_leave_the_model_with_its_version(staff):
    """Both lock the model's row: the delete either sees the version and is refused, or goes first and
    the version registers the model anew."""
    registered = model_make("racing")

    def act(index: int) -> None:
        if index == 0:
            registry_services.registered_model_delete(registered_model=registered, user=staff)
            return
        with transaction.atomic():
            locked = registry_services.registered_model_for_version(name="racing", created_by=staff)
            version_make(locked, 1)

    outcomes = run_together(act, 2)

    assert outcomes[1] is None
    assert outcomes[0] is None or isinstance(outcomes[0], registry_services.ModelHasVersions)
    [model] = RegisteredModel.objects.filter(name="racing")
    assert model.versions.count() == 1
