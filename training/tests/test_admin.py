"""The training admin: runs are read-only, failed ones can be retried, dataset versions start runs."""

from __future__ import annotations

import pytest
from django.urls import reverse

from tests.admin_helpers import messages_of, run_action
from training.models import TrainingRun
from training.tests.helpers import cancer_frame, dataset_upload

pytestmark = pytest.mark.django_db


def test_the_retry_action_queues_failed_runs_again_and_refuses_others(
    client, admin_user, django_capture_on_commit_callbacks
):
    from training import services as training_services

    dataset = dataset_upload(cancer_frame(40), name="cancer", target="diagnosis")
    with django_capture_on_commit_callbacks(execute=False):
        failed = training_services.training_run_create(
            dataset_version=dataset,
            model_name="cancer",
            algorithm="random_forest",
            params={},
            created_by=None,
        )
        queued = training_services.training_run_create(
            dataset_version=dataset,
            model_name="cancer",
            algorithm="random_forest",
            params={},
            created_by=None,
        )
    TrainingRun.objects.filter(pk=failed.pk).update(status="failed", error_message="boom")
    client.force_login(admin_user)

    with django_capture_on_commit_callbacks(execute=False):
        response = run_action(client, "training_trainingrun", "retry_failed_runs", [failed.pk, queued.pk])

    retried = TrainingRun.objects.exclude(pk__in=[failed.pk, queued.pk]).get()
    assert messages_of(response) == [
        f"Run {failed.pk} queued again as run {retried.pk}.",
        f"Only failed runs can be retried; run {queued.pk} is queued.",
    ]
    assert retried.created_by == admin_user
    assert retried.status == "queued"


def test_training_runs_are_read_only_in_admin(client, admin_user, django_capture_on_commit_callbacks):
    from training import services as training_services

    dataset = dataset_upload(cancer_frame(40), name="cancer", target="diagnosis")
    with django_capture_on_commit_callbacks(execute=False):
        run = training_services.training_run_create(
            dataset_version=dataset,
            model_name="cancer",
            algorithm="random_forest",
            params={},
            created_by=None,
        )
    client.force_login(admin_user)

    page = client.get(reverse("admin:training_trainingrun_change", args=[run.pk]))

    assert page.status_code == 200
    assert 'name="_save"' not in page.content.decode()
    assert client.get(reverse("admin:training_trainingrun_changelist")).status_code == 200


def test_the_dataset_version_action_asks_for_a_model_and_algorithm_then_queues_runs(
    client, admin_user, django_capture_on_commit_callbacks
):
    first = dataset_upload(cancer_frame(40), name="cancer", target="diagnosis")
    second = dataset_upload(cancer_frame(50), name="cancer", target="diagnosis")
    client.force_login(admin_user)

    form = run_action(client, "datasets_datasetversion", "train_on_dataset_versions", [first.pk, second.pk])

    html = form.content.decode()
    assert "Train a model on dataset versions" in html
    assert 'name="model_name"' in html
    assert '<optgroup label="Classification">' in html
    assert TrainingRun.objects.count() == 0

    with django_capture_on_commit_callbacks(execute=False):
        done = run_action(
            client,
            "datasets_datasetversion",
            "train_on_dataset_versions",
            [first.pk, second.pk],
            apply="1",
            model_name="cancer-model",
            algorithm="classification:logistic_regression",
        )

    runs = list(TrainingRun.objects.order_by("dataset_version__version"))
    assert [(r.dataset_version_id, r.algorithm, r.task, r.model_name) for r in runs] == [
        (first.pk, "logistic_regression", "classification", "cancer-model"),
        (second.pk, "logistic_regression", "classification", "cancer-model"),
    ]
    assert all(r.created_by == admin_user for r in runs)
    assert [m.endswith("queued.") for m in messages_of(done)] == [True, True]


def test_the_dataset_version_action_shows_form_errors_and_queues_nothing(client, admin_user):
    version = dataset_upload(cancer_frame(40), name="cancer", target="diagnosis")
    client.force_login(admin_user)

    response = run_action(
        client,
        "datasets_datasetversion",
        "train_on_dataset_versions",
        [version.pk],
        apply="1",
        model_name="",
        algorithm="nope",
    )

    html = response.content.decode()
    assert "This field is required." in html
    assert "Select a valid choice." in html
    assert TrainingRun.objects.count() == 0
