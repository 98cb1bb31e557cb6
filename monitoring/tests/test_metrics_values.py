"""Tests of the app's counters as /metrics shows them after a known sequence of predictions and feedback.

Without PROMETHEUS_MULTIPROC_DIR the counters belong to the test process and outlive each test, so every
test compares a scrape after its steps with one before.
"""

from __future__ import annotations

import pytest
from django.test import Client
from prometheus_client.parser import text_string_to_metric_families

from monitoring import prometheus
from predictions.tests.helpers import make_model_version, trained_model
from tests.factories import make_api_client


@pytest.fixture(autouse=True)
def _fresh_label_caches():
    # Version ids and model names come back after a rolled-back test: the caches must not remember them.
    prometheus._model_names.clear()
    prometheus._known_models.clear()


@pytest.fixture
def cancer_v1(db):
    return make_model_version(trained=trained_model("cancer"), name="cancer", version=1)


def samples(client: Client) -> dict[tuple[str, frozenset], float]:
    response = client.get("/metrics", REMOTE_ADDR="127.0.0.1")
    assert response.status_code == 200
    found = {}
    for family in text_string_to_metric_families(response.content.decode()):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def delta(before: dict, after: dict, name: str, **labels: str) -> float:
    key = (name, frozenset(labels.items()))
    return after.get(key, 0.0) - before.get(key, 0.0)


def test_predictions_feedback_and_refusals_add_up_on_metrics(
    client, alice, staff, cancer_v1, settings, django_capture_on_commit_callbacks
):
    settings.PREDICTION_MAX_ROWS = 3
    rows = trained_model("cancer").sample_rows
    api = make_api_client(alice)
    before = samples(client)

    three = api.post("/api/models/cancer/predict/", {"rows": rows[:3]}, format="json").json()["predictions"]
    one = api.post("/api/models/cancer/predict/", {"inputs": rows[0]}, format="json").json()["predictions"]
    too_many = api.post("/api/models/cancer/predict/", {"rows": rows * 2}, format="json")
    wrong_type = api.post(
        "/api/models/cancer/predict/", {"inputs": {**rows[0], "mean radius": "x"}}, format="json"
    )
    no_model = api.post("/api/models/nothing-here/predict/", {"inputs": rows[0]}, format="json")
    staff_api = make_api_client(staff)
    with django_capture_on_commit_callbacks(execute=True):
        for prediction, correct in zip(three, (True, True, False), strict=True):
            url = f"/api/predictions/{prediction['id']}/feedback/"
            assert staff_api.post(url, {"correct": correct}, format="json").status_code == 201
        # The same outcome again is unchanged and not counted twice.
        staff_api.post(f"/api/predictions/{three[0]['id']}/feedback/", {"correct": True}, format="json")
        staff_api.post(f"/api/predictions/{one[0]['id']}/feedback/", {"correct": False}, format="json")
    after = samples(client)

    assert (too_many.status_code, wrong_type.status_code, no_model.status_code) == (400, 400, 404)
    assert delta(before, after, "mlops_predictions_total", model="cancer", version="1", channel="api") == 4
    assert delta(before, after, "mlops_prediction_latency_seconds_count", model="cancer", phase="total") == 2
    for phase in ("validation", "model", "storing"):
        assert (
            delta(before, after, "mlops_prediction_latency_seconds_count", model="cancer", phase=phase) == 2
        )
    assert delta(before, after, "mlops_prediction_latency_seconds_sum", model="cancer", phase="total") > 0
    rejections = "mlops_prediction_rejections_total"
    assert delta(before, after, rejections, model="cancer", reason="too_many_rows") == 1
    assert delta(before, after, rejections, model="cancer", reason="wrong_type") == 1
    # A name that is no registered model never becomes a label of its own.
    assert delta(before, after, rejections, model="", reason="not_found") == 1
    assert not any("nothing-here" in str(labels) for _, labels in after)
    assert delta(before, after, "mlops_feedback_total", model="cancer", verdict="correct") == 2
    assert delta(before, after, "mlops_feedback_total", model="cancer", verdict="wrong") == 2


def test_refusals_before_the_service_count_once_under_their_code(client, alice, cancer_v1, settings):
    api = make_api_client(alice)
    before = samples(client)

    neither = api.post("/api/models/cancer/predict/", {"something": 1}, format="json")
    unreadable = api.post("/api/models/cancer/predict/", "{not json", content_type="application/json")
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 100
    oversized = api.post("/api/models/cancer/predict/", {"inputs": {"x": "y" * 200}}, format="json")

    after = samples(client)
    assert (neither.status_code, unreadable.status_code, oversized.status_code) == (400, 400, 413)
    rejections = "mlops_prediction_rejections_total"
    counted = {
        dict(labels)["reason"]: after[(name, labels)] - before.get((name, labels), 0)
        for name, labels in after
        if name == rejections and dict(labels)["model"] == "cancer"
    }
    assert sum(counted.values()) == 3
    assert counted[oversized.json()["code"]] == 1


def test_a_page_prediction_counts_under_the_page_channel(client, alice, cancer_v1):
    page = Client()
    page.force_login(alice)
    form = page.get("/predict/cancer/").context["form"]
    row = trained_model("cancer").sample_rows[0]
    data = {form.field_of_feature[name]: str(value) for name, value in row.items()}
    before = samples(client)

    assert page.post("/predict/cancer/", data).status_code == 200

    after = samples(client)
    assert delta(before, after, "mlops_predictions_total", model="cancer", version="1", channel="page") == 1


def test_a_changed_outcome_counts_again_and_a_regression_value_counts_as_value(
    client, staff, db, django_capture_on_commit_callbacks
):
    make_model_version(trained=trained_model("diabetes"), name="diabetes", version=1)
    from predictions.tests.helpers import make_predictions

    (prediction,) = make_predictions(user=staff, name="diabetes")
    api = make_api_client(staff)
    before = samples(client)

    with django_capture_on_commit_callbacks(execute=True):
        api.post(f"/api/predictions/{prediction.pk}/feedback/", {"true_value": 101.5}, format="json")
        api.post(f"/api/predictions/{prediction.pk}/feedback/", {"true_value": 99.0}, format="json")

    after = samples(client)
    assert delta(before, after, "mlops_feedback_total", model="diabetes", verdict="value") == 2


def test_a_retraining_decision_counts_once_when_its_transaction_commits(
    client, cancer_v1, django_capture_on_commit_callbacks
):
    from training import event_services

    before = samples(client)
    with django_capture_on_commit_callbacks(execute=True):
        event_services.retraining_event_record(
            registered_model=cancer_v1.registered_model, retraining=None, kind="triggered", message="x"
        )
    after = samples(client)

    assert delta(before, after, "mlops_retraining_decisions_total", model="cancer", decision="triggered") == 1


def test_a_batch_job_counts_its_predicted_and_refused_rows(client, alice, cancer_v1):
    from predictions.tests.batch_helpers import cancer_rows, csv_bytes, job_run, job_start

    rows = cancer_rows(5)
    rows[1]["mean radius"] = "wide"
    before = samples(client)

    job = job_run(job_start(alice, csv_bytes(rows)))

    after = samples(client)
    assert job.status == "succeeded", job.error_message
    assert delta(before, after, "mlops_batch_rows_total", model="cancer", outcome="predicted") == 4
    assert delta(before, after, "mlops_batch_rows_total", model="cancer", outcome="refused") == 1
    assert delta(before, after, "mlops_predictions_total", model="cancer", version="1", channel="batch") == 4


def test_celery_tasks_are_counted_by_state(client, db):
    from monitoring.tasks import worker_heartbeat_task

    before = samples(client)
    worker_heartbeat_task.delay()
    after = samples(client)

    name = "monitoring.tasks.worker_heartbeat_task"
    assert delta(before, after, "mlops_tasks_total", task=name, state="success") == 1


def test_a_rejection_reason_is_the_shared_problem_code_or_the_answer_code():
    from mlops_site.errors import Conflict, problem
    from predictions.errors import InputInvalid

    mixed = InputInvalid([problem("a", code="wrong_type"), problem("b", code="missing_feature")])

    assert prometheus.rejection_reason(InputInvalid([problem("a", code="too_many_rows")])) == "too_many_rows"
    assert prometheus.rejection_reason(mixed) == "invalid"
    assert prometheus.rejection_reason(Conflict("busy", code="no_version_in_stage")) == "no_version_in_stage"


def test_training_runs_count_by_outcome_with_their_duration(client, staff):
    from training.tests.helpers import cancer_frame, dataset_upload, run_train

    dataset = dataset_upload(cancer_frame(), name="cancer", target="diagnosis", user=staff)
    before = samples(client)

    failed = run_train(dataset, target_column="survival")
    succeeded = run_train(dataset)

    after = samples(client)
    assert (failed.status, succeeded.status) == ("failed", "succeeded"), succeeded.error_message
    algorithm = succeeded.algorithm
    assert (
        delta(before, after, "mlops_training_runs_total", algorithm=failed.algorithm, outcome="failed") == 1
    )
    assert delta(before, after, "mlops_training_runs_total", algorithm=algorithm, outcome="succeeded") == 1
    durations = delta(before, after, "mlops_training_run_duration_seconds_count", algorithm=algorithm)
    assert durations == (2 if failed.algorithm == algorithm else 1)
