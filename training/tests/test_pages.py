"""The training pages: staff start a run from the form, follow its progress, and see why it failed."""

from __future__ import annotations

import pytest
from django.urls import reverse

from training.models import TrainingRun
from training.tests.helpers import cancer_frame, dataset_upload

pytestmark = pytest.mark.django_db


@pytest.fixture
def cancer_dataset(staff):
    return dataset_upload(cancer_frame(80), name="cancer", target="diagnosis", user=staff)


def test_staff_start_a_training_run_from_the_page_and_land_on_its_progress(
    client, staff, cancer_dataset, django_capture_on_commit_callbacks
):
    client.force_login(staff)
    form = client.get(reverse("training:list")).content.decode()
    assert f'<option value="{cancer_dataset.pk}">cancer v1 · 80 rows · target diagnosis</option>' in form
    assert '<optgroup label="Classification">' in form

    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            reverse("training:create"),
            {
                "dataset_version": cancer_dataset.pk,
                "model_name": "cancer",
                "algorithm": "classification:random_forest",
                "params": '{"n_estimators": 10, "max_depth": 3}',
                "seed": 7,
                "test_size": 0.25,
            },
        )

    run = TrainingRun.objects.get()
    assert response.status_code == 302
    assert response.url == reverse("training:detail", args=[run.pk])
    assert (run.task, run.algorithm, run.params, run.seed, run.test_size, run.created_by) == (
        "classification",
        "random_forest",
        {"n_estimators": 10, "max_depth": 3},
        7,
        0.25,
        staff,
    )
    assert run.status == TrainingRun.Status.SUCCEEDED, run.error_message
    page = client.get(response.url).content.decode()
    assert 'data-terminal="true"' in page
    assert 'href="/models/cancer/versions/1/">Open cancer v1</a>' in page
    status = client.get(reverse("training:status", args=[run.pk])).json()
    assert status["status"] == "succeeded"
    assert status["progress"] == 100
    assert status["is_terminal"] is True
    assert status["version_url"] == "/models/cancer/versions/1/"
    assert status["attempts"] == 1
    assert status["duration"].endswith(" s")


def test_the_task_is_inferred_when_the_algorithm_is_chosen_without_one(
    client, staff, cancer_dataset, django_capture_on_commit_callbacks
):
    client.force_login(staff)

    with django_capture_on_commit_callbacks(execute=False):
        client.post(
            reverse("training:create"),
            {
                "dataset_version": cancer_dataset.pk,
                "model_name": "cancer",
                "algorithm": "infer:hist_gradient_boosting",
                "params": "",
                "seed": 42,
                "test_size": 0.2,
            },
        )

    run = TrainingRun.objects.get()
    assert (run.task, run.algorithm, run.params, run.status) == ("", "hist_gradient_boosting", {}, "queued")


@pytest.mark.parametrize(
    ("params", "problem"),
    [
        ("[1, 2]", "Hyperparameters must be a JSON object"),
        ("{max_depth: 3}", "This is not valid JSON"),
        ('{"n_estimators": "many"}', "n_estimators"),
    ],
)
def test_malformed_hyperparameters_are_shown_on_the_form(client, staff, cancer_dataset, params, problem):
    client.force_login(staff)

    response = client.post(
        reverse("training:create"),
        {
            "dataset_version": cancer_dataset.pk,
            "model_name": "cancer",
            "algorithm": "classification:random_forest",
            "params": params,
            "seed": 1,
            "test_size": 0.2,
        },
    )

    assert response.status_code == 400
    assert problem in response.content.decode()
    assert TrainingRun.objects.count() == 0


def test_a_service_refusal_is_shown_on_the_form(client, staff, cancer_dataset):
    client.force_login(staff)

    response = client.post(
        reverse("training:create"),
        {
            "dataset_version": cancer_dataset.pk,
            "model_name": "Not A Valid Name",
            "algorithm": "classification:random_forest",
            "params": "{}",
            "seed": 1,
            "test_size": 0.2,
        },
    )

    assert response.status_code == 400
    html = response.content.decode()
    assert 'class="errorlist run-problems"' in html
    assert "Model name &#x27;Not A Valid Name&#x27; is not valid." in html
    assert TrainingRun.objects.count() == 0


def test_a_failed_run_shows_its_reason(client, staff, cancer_dataset, django_capture_on_commit_callbacks):
    client.force_login(staff)

    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            reverse("training:create"),
            {
                "dataset_version": cancer_dataset.pk,
                "model_name": "cancer",
                "algorithm": "classification:random_forest",
                "params": "{}",
                "target_column": "no_such_column",
                "seed": 1,
                "test_size": 0.2,
            },
        )

    run = TrainingRun.objects.get()
    assert run.status == TrainingRun.Status.FAILED
    page = client.get(response.url).content.decode()
    assert "no_such_column" in page
    assert 'class="badge status-failed"' in page
    assert client.get(reverse("training:status", args=[run.pk])).json()["error_message"] == (
        run.error_message
    )
    listing = client.get(reverse("training:list")).content.decode()
    assert f'data-run="{run.pk}"' in listing


def test_the_training_list_queries_do_not_grow_with_the_number_of_runs(
    client, staff, cancer_dataset, django_assert_max_num_queries, django_capture_on_commit_callbacks
):
    from training import services as training_services

    client.force_login(staff)
    with django_capture_on_commit_callbacks(execute=False):
        for _ in range(6):
            training_services.training_run_create(
                dataset_version=cancer_dataset,
                model_name="cancer",
                algorithm="random_forest",
                params={},
                created_by=staff,
            )

    with django_assert_max_num_queries(8):
        assert client.get(reverse("training:list")).status_code == 200
