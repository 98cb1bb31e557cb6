"""Deleting a registered model without versions: the service, its refusals, its race and MLflow's side."""

from __future__ import annotations

from unittest import mock

import pytest
from django.db import transaction

from models_registry import mlflow_gateway
from models_registry import services as registry_services
from models_registry.models import RegisteredModel, Webhook
from models_registry.tests.mlflow_helpers import client as mlflow_client
from models_registry.tests.registry_helpers import make_model, make_version
from training.models import TrainingRun
from training.tests.helpers import cancer_frame, dataset_upload

pytestmark = pytest.mark.django_db


def test_a_model_without_versions_is_deleted_with_its_webhooks(staff):
    registered = make_model("leftover")
    Webhook.objects.create(
        registered_model=registered,
        url="https://hooks.example.com/a",
        secret="s" * 20,
        events=["version_promoted"],
    )

    registry_services.registered_model_delete(registered_model=registered, user=staff)

    assert not RegisteredModel.objects.filter(name="leftover").exists()
    assert not Webhook.objects.exists()


def test_a_model_with_versions_is_refused_and_kept(staff):
    registered = make_model("churn")
    make_version(registered, 1)

    with pytest.raises(registry_services.ModelHasVersions) as refused:
        registry_services.registered_model_delete(registered_model=registered, user=staff)

    assert refused.value.status == 409
    assert refused.value.code == "model_has_versions"
    assert refused.value.detail.startswith("Model 'churn' has 1 version and cannot be deleted")
    assert RegisteredModel.objects.filter(name="churn").exists()


def test_a_model_with_a_training_run_in_progress_is_refused(staff):
    registered = make_model("pending")
    dataset = dataset_upload(cancer_frame(30), name="cancer", target="diagnosis", user=staff)
    run = TrainingRun.objects.create(
        dataset_version=dataset,
        registered_model=registered,
        target_column="diagnosis",
        algorithm="random_forest",
    )

    with pytest.raises(registry_services.ModelInUse) as refused:
        registry_services.registered_model_delete(registered_model=registered, user=staff)

    assert refused.value.code == "model_in_use"
    assert f"training run {run.pk} is queued or running" in refused.value.detail
    assert RegisteredModel.objects.filter(name="pending").exists()


def test_deleting_a_model_already_gone_does_nothing(staff):
    registered = make_model("leftover")
    RegisteredModel.objects.filter(pk=registered.pk).delete()

    registry_services.registered_model_delete(registered_model=registered, user=staff)


def test_the_name_is_removed_from_mlflow_only_when_mlflow_holds_no_version_of_it(staff):
    registered = make_model("leftover")
    client = mlflow_client()
    client.create_registered_model("leftover")

    registry_services.registered_model_delete(registered_model=registered, user=staff)

    assert client.search_registered_models(filter_string="name = 'leftover'") == []
    assert mlflow_gateway.registered_model_delete_if_empty(name="never-registered") is False


def test_mlflow_keeps_a_name_that_still_has_versions(staff):
    client = mlflow_client()
    client.create_registered_model("kept")
    with (
        mock.patch.object(client, "search_model_versions", return_value=["a version"]),
        mock.patch.object(mlflow_gateway.connection, "client", return_value=client),
    ):
        assert mlflow_gateway.registered_model_delete_if_empty(name="kept") is False
    assert len(client.search_registered_models(filter_string="name = 'kept'")) == 1


def test_an_mlflow_outage_does_not_undo_the_deletion(staff, caplog):
    registered = make_model("leftover")

    with mock.patch.object(
        mlflow_gateway,
        "registered_model_delete_if_empty",
        side_effect=mlflow_gateway.RegistryUnavailable("down"),
    ):
        registry_services.registered_model_delete(registered_model=registered, user=staff)

    assert not RegisteredModel.objects.filter(name="leftover").exists()
    assert "could not remove model leftover from MLflow's registry" in caplog.text


def test_a_new_version_locks_the_model_or_creates_it(staff):
    existing = make_model("churn")

    with transaction.atomic():
        found = registry_services.registered_model_for_version(name="churn", created_by=staff)
        created = registry_services.registered_model_for_version(name="fresh", created_by=staff)

    assert found == existing
    assert (created.name, created.created_by) == ("fresh", staff)
    with pytest.raises(Exception, match="not valid"):
        registry_services.registered_model_for_version(name="Bad Name", created_by=staff)


# ------------------------------------------------------------------------------
# A failed training run leaves no empty model behind
# ------------------------------------------------------------------------------
def _queue(dataset, name: str = "cancer") -> TrainingRun:
    from training import services as training_services
    from training.tests.helpers import FAST_FOREST

    return training_services.training_run_create(
        dataset_version=dataset,
        model_name=name,
        algorithm="random_forest",
        params=FAST_FOREST,
        created_by=None,
    )


def _fail_after_registration(run: TrainingRun) -> None:
    from training import execution
    from training import services as training_services

    with mock.patch.object(execution, "_model_version_record", side_effect=RuntimeError("disk on fire")):
        assert training_services.training_run_execute(run_id=run.pk).status == "failed"


def test_a_failed_first_run_leaves_no_empty_model_in_mlflow(staff):
    dataset = dataset_upload(cancer_frame(80), name="cancer", target="diagnosis", user=staff)

    _fail_after_registration(_queue(dataset))

    assert mlflow_client().search_registered_models(filter_string="name = 'cancer'") == []


def test_mlflow_keeps_the_name_while_another_run_of_the_model_is_queued(staff):
    dataset = dataset_upload(cancer_frame(80), name="cancer", target="diagnosis", user=staff)
    failing, waiting = _queue(dataset), _queue(dataset)

    _fail_after_registration(failing)

    assert len(mlflow_client().search_registered_models(filter_string="name = 'cancer'")) == 1
    assert TrainingRun.objects.get(pk=waiting.pk).status == TrainingRun.Status.QUEUED
