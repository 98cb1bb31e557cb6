"""The training run page once a run has ended (its results, final state and resolved task), the "queued"
flash that must not outlive the state it told, and the training form filled in from a link."""

from __future__ import annotations

import json
import re

import pytest
from django.urls import reverse

from models_registry import transition_services
from models_registry.models import Stage
from training import services as training_services
from training.models import TrainingRun
from training.tests.helpers import FAST_FOREST, cancer_frame, dataset_upload, diabetes_frame, run_train

pytestmark = pytest.mark.django_db


@pytest.fixture
def cancer(staff):
    return dataset_upload(cancer_frame(80), name="cancer", target="diagnosis", user=staff)


def figure_of(html: str, name: str) -> dict:
    found = re.search(rf'<script id="figure-{name}" type="application/json">(.*?)</script>', html, re.S)
    assert found, f"no {name} figure on the page"
    return json.loads(found.group(1))


def test_a_succeeded_run_shows_its_metrics_charts_version_and_the_task_it_inferred(client, staff, cancer):
    run = run_train(cancer, model_name="cancer", algorithm="random_forest", user=staff)
    assert run.status == TrainingRun.Status.SUCCEEDED, run.error_message
    client.force_login(staff)

    html = client.get(reverse("training:detail", args=[run.pk])).content.decode()

    assert 'data-terminal="true"' in html
    assert "<dd data-task>Classification</dd>" in html
    assert "inferred" not in html.lower()
    results = html[html.index('id="results"') :]
    assert 'Registered as <a href="/models/cancer/versions/1/">cancer v1</a>' in results
    accuracy = run.model_version.metrics["accuracy"]
    assert f'<tr><th>Accuracy</th><td class="num">{accuracy:.4f}</td></tr>' in results
    confusion = figure_of(html, "confusion_matrix")
    assert confusion["data"][0]["z"] == run.model_version.artifacts["confusion_matrix"]["matrix"]
    assert figure_of(html, "feature_importances")["data"][0]["type"] == "bar"
    assert "plotly" in html
    # The embedded store has no UI unless one is named: the run id is plain text.
    assert f"<code>{run.mlflow_run_id}</code>" in html


def test_the_mlflow_run_id_links_to_the_configured_ui(client, staff, cancer, settings):
    run = run_train(cancer, model_name="cancer", algorithm="random_forest", user=staff)
    settings.MLFLOW_UI_URL = "http://127.0.0.1:5000"
    client.force_login(staff)

    html = client.get(reverse("training:detail", args=[run.pk])).content.decode()

    assert f'<a href="http://127.0.0.1:5000/#/runs/{run.mlflow_run_id}" rel="noopener">' in html


def test_a_regression_run_shows_its_residuals_tall_enough_to_read(client, staff):
    dataset = dataset_upload(diabetes_frame(120), name="diabetes", target="progression", user=staff)
    run = run_train(dataset, model_name="diabetes", algorithm="random_forest", user=staff)
    client.force_login(staff)

    html = client.get(reverse("training:detail", args=[run.pk])).content.decode()

    assert "<dd data-task>Regression</dd>" in html
    residuals = figure_of(html, "residuals")
    layout = residuals["layout"]
    assert layout["height"] - layout["margin"]["t"] - layout["margin"]["b"] >= 250
    assert "confusion_matrix" not in html


def test_a_queued_run_says_the_task_is_still_to_be_inferred_and_shows_no_results(client, staff, cancer):
    run = training_services.training_run_create(
        dataset_version=cancer,
        model_name="cancer",
        algorithm="random_forest",
        params={},
        created_by=staff,
        enqueue=False,
    )
    client.force_login(staff)

    html = client.get(reverse("training:detail", args=[run.pk])).content.decode()

    assert 'data-terminal="false"' in html
    assert "<dd data-task>Inferred from the target column when the run starts</dd>" in html
    assert 'id="results"' not in html


def test_a_failed_run_shows_its_final_state_and_offers_to_start_again(client, staff, cancer):
    run = run_train(cancer, model_name="cancer", target_column="no_such_column", user=staff)
    assert run.status == TrainingRun.Status.FAILED
    client.force_login(staff)

    html = client.get(reverse("training:detail", args=[run.pk])).content.decode()

    assert 'class="badge status-failed"' in html
    assert "no_such_column" in html
    assert "<dd data-task>Not recorded: the run failed before it registered a version</dd>" in html
    assert 'id="results"' not in html
    again = reverse("training:list") + f"?dataset_version={cancer.pk}&amp;model=cancer#new-run"
    assert f'href="{again}"' in html


def test_the_submitted_flash_is_shown_once_and_marked_for_the_page_script(
    client, staff, cancer, django_capture_on_commit_callbacks
):
    client.force_login(staff)
    with django_capture_on_commit_callbacks(execute=False):
        response = client.post(
            reverse("training:create"),
            {
                "dataset_version": cancer.pk,
                "model_name": "cancer",
                "algorithm": "classification:random_forest",
                "params": "",
                "seed": 1,
                "test_size": 0.2,
            },
        )
    run = TrainingRun.objects.get()

    first = client.get(response.url).content.decode()
    again = client.get(response.url).content.decode()

    assert f'<li class="message run-submitted success">Training run {run.pk} was submitted.</li>' in first
    assert "was submitted" not in again, "a reload after the run ended shows no stale flash"
    assert "is queued" not in first


def test_the_run_page_is_for_staff_only(client, alice, staff, cancer):
    run = run_train(cancer, model_name="cancer", user=staff)
    url = reverse("training:detail", args=[run.pk])

    assert client.get(url).status_code == 302
    client.force_login(alice)
    assert client.get(url).status_code == 403
    client.force_login(staff)
    assert client.get(reverse("training:detail", args=[run.pk + 1000])).status_code == 404


# The form filled in from a link: "Train on this version", "Train a new version".


def selected_option(html: str, field: str) -> str | None:
    select = re.search(rf'<select name="{field}".*?</select>', html, re.S)
    assert select, f"no {field} select"
    chosen = re.search(r'<option value="([^"]*)"[^>]*selected>', select.group(0))
    # The empty choice ("Choose a dataset version") is what an untouched select shows.
    return (chosen.group(1) or None) if chosen else None


def test_train_on_this_version_links_to_the_form_with_the_version_chosen(client, staff, cancer):
    client.force_login(staff)

    version_page = client.get(reverse("datasets:version-detail", args=["cancer", 1])).content.decode()
    link = re.search(r'id="train-on-version" href="([^"]+)"', version_page).group(1).replace("&amp;", "&")
    form = client.get(link).content.decode()

    assert link.startswith(reverse("training:list") + f"?dataset_version={cancer.pk}")
    assert selected_option(form, "dataset_version") == str(cancer.pk)
    assert "prefill-ignored" not in form


def test_a_model_link_fills_in_the_model_its_algorithm_and_the_newest_data_of_its_dataset(
    client, staff, cancer
):
    run = run_train(cancer, model_name="cancer", algorithm="random_forest", params=FAST_FOREST, user=staff)
    transition_services.model_version_transition(
        model_version=run.model_version, to_stage=Stage.STAGING, user=staff
    )
    newer = dataset_upload(cancer_frame(90), name="cancer", target="diagnosis", user=staff)
    client.force_login(staff)

    form = client.get(reverse("training:list"), {"model": "cancer"}).content.decode()
    explicit = client.get(reverse("training:list"), {"model": "cancer", "dataset_version": cancer.pk})

    assert selected_option(form, "dataset_version") == str(newer.pk)
    assert selected_option(form, "algorithm") == "classification:random_forest"
    assert 'name="model_name" value="cancer"' in form
    assert 'name="target_column" value="diagnosis"' in form
    assert selected_option(explicit.content.decode(), "dataset_version") == str(cancer.pk)


@pytest.mark.parametrize(
    ("query", "notice"),
    [
        ({"dataset_version": "abc"}, "There is no dataset version &#x27;abc&#x27;; choose one below."),
        ({"dataset_version": "99999"}, "There is no dataset version &#x27;99999&#x27;"),
        ({"dataset_version": "9" * 40}, "There is no dataset version"),
        ({"dataset_version": "-1"}, "There is no dataset version &#x27;-1&#x27;"),
        ({"dataset_version": "²"}, "There is no dataset version &#x27;²&#x27;"),
        ({"model": "nobody"}, "There is no model named &#x27;nobody&#x27;"),
        ({"model": "x" * 500}, "There is no model named"),
    ],
)
def test_a_bad_link_value_leaves_its_field_empty_and_says_so(client, staff, cancer, query, notice):
    client.force_login(staff)

    response = client.get(reverse("training:list"), query)

    html = response.content.decode()
    assert response.status_code == 200
    assert notice in html
    assert selected_option(html, "dataset_version") is None
    assert 'name="model_name" value=' not in html


def test_the_older_model_name_parameter_still_fills_in_the_model(client, staff, cancer):
    run_train(cancer, model_name="cancer", user=staff)
    client.force_login(staff)

    html = client.get(reverse("training:list"), {"model_name": "cancer"}).content.decode()

    assert 'name="model_name" value="cancer"' in html


def test_the_filled_in_form_is_for_staff_only(client, alice, cancer):
    client.force_login(alice)

    assert client.get(reverse("training:list"), {"dataset_version": cancer.pk}).status_code == 403
