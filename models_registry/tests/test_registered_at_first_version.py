"""A model is registered with its first version: a failed training run leaves no empty model behind."""

from __future__ import annotations

from unittest import mock

import pytest
from django.urls import reverse

from models_registry import services as registry_services
from models_registry.models import RegisteredModel
from models_registry.tests.registry_helpers import make_model
from training import execution
from training import services as training_services
from training.models import TrainingRun
from training.tests.helpers import FAST_FOREST, cancer_frame, dataset_upload, run_train

pytestmark = pytest.mark.django_db


@pytest.fixture
def cancer(staff):
    return dataset_upload(cancer_frame(80), name="cancer", target="diagnosis", user=staff)


def _queue(dataset, name: str) -> TrainingRun:
    return training_services.training_run_create(
        dataset_version=dataset,
        model_name=name,
        algorithm="random_forest",
        params=FAST_FOREST,
        created_by=None,
    )


def _fail_after_registration(run: TrainingRun) -> None:
    with mock.patch.object(execution, "_model_version_record", side_effect=RuntimeError("disk on fire")):
        assert training_services.training_run_execute(run_id=run.pk).status == "failed"


def test_a_failed_first_run_leaves_no_registered_model_and_keeps_its_name(client, staff, cancer):
    run = _queue(cancer, name="brand-new")

    assert not RegisteredModel.objects.filter(name="brand-new").exists()
    _fail_after_registration(run)

    run.refresh_from_db()
    assert run.status == TrainingRun.Status.FAILED
    assert (run.model_name, run.registered_model) == ("brand-new", None)
    assert not RegisteredModel.objects.filter(name="brand-new").exists()
    client.force_login(staff)
    assert "brand-new" not in client.get(reverse("registry:model-list")).content.decode()
    assert "brand-new" in client.get(reverse("training:detail", args=[run.pk])).content.decode()


def test_a_run_registers_its_model_with_its_first_version(staff, cancer):
    run = run_train(cancer, model_name="brand-new", user=staff)

    registered = RegisteredModel.objects.get(name="brand-new")
    assert run.registered_model == registered
    assert registered.created_by == staff
    assert (registered.task, registered.target_column) == ("classification", "diagnosis")
    assert list(registered.versions.values_list("version", flat=True)) == [1]


def test_deleting_an_empty_model_keeps_the_record_of_its_failed_runs(staff, cancer):
    registered = make_model("planned", task="", target="")
    run = _queue(cancer, name="planned")
    assert run.registered_model == registered
    _fail_after_registration(run)

    registry_services.registered_model_delete(registered_model=registered, user=staff)

    run.refresh_from_db()
    assert (run.model_name, run.registered_model, run.status) == ("planned", None, TrainingRun.Status.FAILED)
    assert not RegisteredModel.objects.filter(name="planned").exists()


def test_a_run_queued_for_a_new_name_registers_nothing_until_it_records_its_version(client, staff, cancer):
    run = _queue(cancer, name="brand-new")
    client.force_login(staff)

    listed = client.get(reverse("registry:model-list")).content.decode()
    page = client.get(reverse("training:detail", args=[run.pk])).content.decode()

    assert (run.model_name, run.registered_model) == ("brand-new", None)
    assert not RegisteredModel.objects.filter(name="brand-new").exists()
    assert "brand-new" not in listed
    assert 'brand-new <span class="muted">(registered with its first version)</span>' in page


def test_two_runs_of_a_new_name_register_one_model_with_two_versions(staff, cancer):
    first, second = _queue(cancer, name="twins"), _queue(cancer, name="twins")

    for run in (first, second):
        assert training_services.training_run_execute(run_id=run.pk).status == "succeeded"

    [registered] = RegisteredModel.objects.filter(name="twins")
    assert sorted(registered.versions.values_list("version", flat=True)) == [1, 2]
    assert {r.registered_model_id for r in TrainingRun.objects.all()} == {registered.pk}


def test_a_run_for_another_target_than_the_model_registered_meanwhile_fails_with_the_reason(staff, cancer):
    run = _queue(cancer, name="late")
    make_model("late", target="something_else")

    outcome = training_services.training_run_execute(run_id=run.pk)

    run.refresh_from_db()
    assert outcome.status == "failed"
    assert "Model 'late' predicts 'something_else'; this run predicts 'diagnosis'" in run.error_message
    assert RegisteredModel.objects.get(name="late").versions.count() == 0


def test_a_bad_model_name_is_refused_before_anything_is_stored(cancer):
    with pytest.raises(Exception, match="is not valid"):
        _queue(cancer, name="Bad Name")

    assert not TrainingRun.objects.exists()
