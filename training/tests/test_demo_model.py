"""The demo model: queued once per site on the first start, trained and promoted by the worker's task,
shown as a demo, and removable by staff with everything recorded against it."""

from __future__ import annotations

import pytest
from django.core.management import call_command
from django.urls import reverse

from feedback import services as feedback_services
from feedback.models import Feedback, Source
from models_registry.models import ModelVersion, RegisteredModel
from predictions import services as prediction_services
from predictions.models import Prediction
from training import demo_promotion, demo_services
from training.models import DemoModel, TrainingRun
from training.tasks import training_run_execute_task

pytestmark = pytest.mark.django_db

NAME = demo_services.DEMO_MODEL_NAME


@pytest.fixture
def demo_data(staff):
    call_command("load_demo_datasets", verbosity=0)


@pytest.fixture
def demo(demo_data, django_capture_on_commit_callbacks):
    """The demo run queued and executed by the task, as the worker would."""
    with django_capture_on_commit_callbacks(execute=False):
        run = demo_services.demo_model_start()
    training_run_execute_task.apply(args=[run.pk])
    return RegisteredModel.objects.get(name=NAME)


def test_the_task_trains_the_demo_and_puts_it_in_production(demo):
    version = ModelVersion.objects.get(registered_model=demo)

    assert version.stage == "production"
    assert version.training_run.algorithm == demo_services.DEMO_ALGORITHM
    assert demo.description == demo_services.DEMO_DESCRIPTION
    record = DemoModel.objects.get()
    assert record.registered_model == demo
    assert record.promoted_at is not None
    # A duplicate message finds the run finished and changes nothing.
    training_run_execute_task.apply(args=[record.training_run_id])
    assert demo_promotion.demo_model_promote(run_id=record.training_run_id) is None
    assert version.transitions.count() == 1


def test_it_is_started_once_per_site_even_after_it_was_removed(demo, staff):
    with pytest.raises(demo_services.DemoNotStarted, match="earlier start"):
        demo_services.demo_model_start()

    demo_services.demo_model_remove(user=staff)

    with pytest.raises(demo_services.DemoNotStarted, match="earlier start"):
        demo_services.demo_model_start()
    assert TrainingRun.objects.count() == 0


def test_without_the_demo_data_or_with_its_name_taken_nothing_is_queued(demo_data):
    RegisteredModel.objects.create(name=NAME)
    with pytest.raises(demo_services.DemoNotStarted, match="exists already"):
        demo_services.demo_model_start()
    RegisteredModel.objects.all().delete()
    from datasets.models import Dataset, DatasetVersion

    DatasetVersion.objects.all().delete()
    Dataset.objects.all().delete()
    with pytest.raises(demo_services.DemoNotStarted, match="load_demo_datasets"):
        demo_services.demo_model_start()
    assert not DemoModel.objects.exists()


def test_the_command_says_what_it_did_and_why_not_the_second_time(demo_data, capsys):
    call_command("demo_model")
    call_command("demo_model")

    said = capsys.readouterr().out
    assert f"Demo model {NAME}: training run" in said
    assert "No demo model queued: The demo model was started on an earlier start" in said


def test_staff_see_it_marked_and_remove_it_with_its_predictions_and_feedback(client, demo, staff, alice):
    row = {feature["name"]: 1.0 for feature in ModelVersion.objects.get().feature_schema}
    outcome = prediction_services.prediction_make(
        registered_model_name=NAME, rows=[row], user=alice, channel="api"
    )
    feedback_services.feedback_give(
        prediction_id=outcome.predictions[0].pk, user=alice, data={"correct": True}, source=Source.API
    )
    client.force_login(staff)

    page = client.get(reverse("registry:model-detail", args=[NAME])).content.decode()
    confirm = client.get(reverse("training:demo-remove"))
    removed = client.post(reverse("training:demo-remove"))

    assert "data-demo" in page
    assert reverse("training:demo-remove") in page
    assert confirm.status_code == 200
    assert "1 prediction" in confirm.content.decode()
    assert removed.status_code == 302
    assert not RegisteredModel.objects.filter(name=NAME).exists()
    assert not ModelVersion.objects.exists()
    assert not Prediction.objects.exists()
    assert not Feedback.objects.exists()
    assert DemoModel.objects.get().removed_at is not None
    assert client.post(reverse("training:demo-remove")).status_code == 302  # nothing left: no error


def test_only_staff_remove_the_demo(client, demo, alice):
    client.force_login(alice)

    assert client.get(reverse("training:demo-remove")).status_code == 403
    assert client.post(reverse("training:demo-remove")).status_code == 403
    assert RegisteredModel.objects.filter(name=NAME).exists()
    page = client.get(reverse("registry:model-detail", args=[NAME])).content.decode()
    assert reverse("training:demo-remove") not in page
