"""The training-run API (staff): queue a run, follow it to its version, and the 400s of a bad request."""

from __future__ import annotations

import pytest

from mlops_site.tests.helpers import error_body, messages_of
from tests.factories import make_api_client as api_for
from training.models import TrainingRun
from training.tests.helpers import FAST_FOREST, cancer_frame, dataset_upload

pytestmark = pytest.mark.django_db


@pytest.fixture
def cancer(staff):
    return dataset_upload(cancer_frame(60), name="cancer", target="diagnosis", user=staff)


def queue_run(api, **fields):
    """POST a forest run on cancer v1 with the fast hyperparameters, and `fields` on top."""
    request = {
        "dataset": "cancer",
        "dataset_version": 1,
        "model_name": "cancer",
        "algorithm": "random_forest",
        "params": FAST_FOREST,
    }
    return api.post("/api/training-runs/", {**request, **fields}, format="json")


def test_staff_queue_a_training_run_and_follow_it_to_its_version(
    staff, cancer, django_capture_on_commit_callbacks
):
    api = api_for(staff)

    with django_capture_on_commit_callbacks(execute=True):
        response = queue_run(api, seed=3)

    assert response.status_code == 201, response.json()
    created = response.json()
    assert (created["status"], created["model"], created["dataset"], created["seed"]) == (
        "queued",
        "cancer",
        "cancer",
        3,
    )
    run = api.get(f"/api/training-runs/{created['id']}/").json()
    assert run["status"] == "succeeded", run["error_message"]
    assert run["progress"] == 100
    assert run["model_version"] == 1
    assert run["duration_seconds"] > 0
    assert api.get("/api/models/cancer/versions/1/").json()["training_run"] == created["id"]


@pytest.mark.parametrize(
    ("data", "field", "problem"),
    [
        ({"params": [1, 2]}, "params", "must be a JSON object"),
        ({"params": {"max_depth": "deep"}}, "params", "max_depth"),
        ({"algorithm": "svm"}, "algorithm", "svm"),
        ({"test_size": 1.5}, "test_size", "less than or equal to 0.5"),
        # The page has always refused this share; the API accepted it.
        ({"test_size": 0.9}, "test_size", "less than or equal to 0.5"),
        ({"test_size": 0.01}, "test_size", "greater than or equal to 0.05"),
        ({"task": "clustering"}, "task", "is not a valid choice"),
        ({"model_name": "Bad Name"}, None, "is not valid"),
    ],
)
def test_a_malformed_training_request_is_a_400_and_queues_nothing(staff, cancer, data, field, problem):
    request = {
        "dataset": "cancer",
        "dataset_version": 1,
        "model_name": "cancer",
        "algorithm": "random_forest",
    }

    response = api_for(staff).post("/api/training-runs/", {**request, **data}, format="json")

    body = error_body(response, 400, "invalid")
    assert any(problem in message for message in messages_of(body, field)), body
    assert TrainingRun.objects.count() == 0


@pytest.mark.parametrize(
    ("reference", "problem"),
    [
        ({"dataset": "cancer", "dataset_version": 7}, "Dataset 'cancer' has no version 7."),
        ({"dataset": "nope", "dataset_version": 1}, "Dataset 'nope' has no version 1."),
    ],
)
def test_a_run_on_a_dataset_version_that_does_not_exist_is_a_404(staff, cancer, reference, problem):
    request = {"model_name": "cancer", "algorithm": "random_forest", **reference}

    response = api_for(staff).post("/api/training-runs/", request, format="json")

    body = error_body(response, 404, "not_found")
    assert messages_of(body, "dataset_version") == [problem]
    assert TrainingRun.objects.count() == 0


def test_the_api_and_the_page_take_the_same_holdout_shares():
    from ml.train import TEST_SIZE_MAX, TEST_SIZE_MIN
    from training.forms import TrainingRunForm
    from training.serializers import TrainingRunInputSerializer

    form_field = TrainingRunForm.base_fields["test_size"]
    api_field = TrainingRunInputSerializer().fields["test_size"]

    assert (form_field.min_value, form_field.max_value) == (TEST_SIZE_MIN, TEST_SIZE_MAX)
    assert (api_field.min_value, api_field.max_value) == (TEST_SIZE_MIN, TEST_SIZE_MAX)


def test_a_problem_only_training_finds_fails_the_run_with_the_reason(
    staff, cancer, django_capture_on_commit_callbacks
):
    api = api_for(staff)

    with django_capture_on_commit_callbacks(execute=True):
        created = queue_run(api, target_column="no_such_column")

    assert created.status_code == 201, created.json()
    run = api.get(f"/api/training-runs/{created.json()['id']}/").json()
    assert run["status"] == "failed"
    assert "no_such_column" in run["error_message"]
    assert run["model_version"] is None


def test_the_run_list_needs_the_same_queries_for_many_runs(
    staff, cancer, django_assert_num_queries, django_capture_on_commit_callbacks
):
    from training import services as training_services

    with django_capture_on_commit_callbacks(execute=False):
        for _ in range(5):
            training_services.training_run_create(
                dataset_version=cancer,
                model_name="cancer",
                algorithm="random_forest",
                params={},
                created_by=staff,
            )
    api = api_for(staff)

    # token lookup with its user, the page count, the page
    with django_assert_num_queries(3):
        assert len(api.get("/api/training-runs/").json()["results"]) == 5
