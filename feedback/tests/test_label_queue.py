"""The staff label queue: a version's unlabelled predictions, least confident first, labelled in one click."""

from __future__ import annotations

import pytest
from django.test import Client
from django.urls import reverse

from feedback import services
from feedback.models import Feedback, Source
from predictions import services as prediction_services
from predictions.models import Prediction
from predictions.tests.helpers import make_model_version, make_predictions, trained_model

pytestmark = pytest.mark.django_db


def client_for(user):
    client = Client()
    client.force_login(user)
    return client


def queue_url(name="cancer", **query):
    url = reverse("feedback:label-queue", args=[name])
    return url + ("?" + "&".join(f"{k}={v}" for k, v in query.items()) if query else "")


def listed(response):
    return [row["prediction"].pk for row in response.context["rows"]]


def with_confidence(predictions, values):
    for prediction, value in zip(predictions, values, strict=True):
        Prediction.objects.filter(pk=prediction.pk).update(confidence=value)


def test_anonymous_visitors_are_sent_to_the_login_page(cancer_v1):
    response = Client().get(queue_url())

    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")


def test_users_without_staff_status_are_refused(alice, cancer_v1):
    make_predictions(user=alice)

    response = client_for(alice).get(queue_url())

    assert response.status_code == 403


def test_staff_see_the_production_versions_unlabelled_predictions_least_confident_first(
    alice, bob, staff, cancer_v1
):
    predictions = make_predictions(user=alice, count=3) + make_predictions(user=bob, count=1)
    with_confidence(predictions, [0.9, 0.55, 0.7, 0.51])
    services.feedback_give(
        prediction_id=predictions[3].pk, user=staff, source=Source.API, data={"correct": True}
    )

    response = client_for(staff).get(queue_url())

    assert response.status_code == 200
    assert response.context["version"] == cancer_v1
    assert listed(response) == [predictions[1].pk, predictions[2].pk, predictions[0].pk]
    html = response.content.decode()
    assert "0.550" in html
    # The inputs, by feature name, and the prediction.
    first_feature = cancer_v1.feature_schema[0]["name"]
    assert f"<code>{first_feature}</code>=" in html
    assert "and 6 more" in html


def test_each_row_has_one_label_button_per_class_coming_back_to_the_queue(alice, staff, iris_v1):
    (prediction,) = make_predictions(user=alice, name="iris")
    client = client_for(staff)

    html = client.get(queue_url("iris", page=1)).content.decode()

    row = html.split(f'data-prediction="{prediction.pk}"')[1].split("</tr>")[0]
    assert f'action="{reverse("feedback:give", args=[prediction.pk])}"' in row
    for label in iris_v1.classes:
        assert f'name="true_label" value="{label}"' in row
    assert 'name="next" value="/models/iris/label-queue/?page=1"' in row
    wrong = next(c for c in iris_v1.classes if c != prediction.prediction)

    response = client.post(
        reverse("feedback:give", args=[prediction.pk]),
        {"true_label": wrong, "next": "/models/iris/label-queue/?page=1"},
    )

    assert response["Location"] == "/models/iris/label-queue/?page=1"
    feedback = Feedback.objects.get()
    assert (feedback.true_label, feedback.correct, feedback.labelled_by) == (wrong, False, staff)
    after = client.get(queue_url("iris"))
    assert listed(after) == []
    assert 'id="queue-empty"' in after.content.decode()


def test_a_regression_queue_asks_for_the_observed_number(alice, staff, diabetes_v1):
    (prediction,) = make_predictions(user=alice, name="diabetes")

    html = client_for(staff).get(queue_url("diabetes")).content.decode()

    row = html.split(f'data-prediction="{prediction.pk}"')[1].split("</tr>")[0]
    assert 'type="number" step="any" name="true_value"' in row
    assert 'name="true_label"' not in row


def test_another_version_is_chosen_with_the_version_parameter(alice, staff, cancer_v1):
    make_predictions(user=alice, count=2)
    make_model_version(trained=trained_model("cancer"), name="cancer", version=2, stage="staging")
    outcome = prediction_services.prediction_make(
        registered_model_name="cancer",
        rows=trained_model("cancer").sample_rows[:1],
        user=alice,
        channel="api",
        stage="staging",
    )
    client = client_for(staff)

    response = client.get(queue_url(version=2))

    assert response.context["version"].version == 2
    assert listed(response) == [outcome.predictions[0].pk]
    assert '<option value="2" selected>v2 (staging)</option>' in response.content.decode()
    assert len(listed(client.get(queue_url()))) == 2


@pytest.mark.parametrize("query", [{"version": "9"}, {"version": "two"}])
def test_an_unknown_version_is_404(staff, cancer_v1, query):
    assert client_for(staff).get(queue_url(**query)).status_code == 404


def test_an_unknown_model_is_404(staff, db):
    assert client_for(staff).get(queue_url("nope")).status_code == 404


def test_the_queue_is_paginated_by_25(alice, staff, cancer_v1):
    predictions = make_predictions(user=alice, count=30)
    with_confidence(predictions, [0.5 + i / 100 for i in range(30)])
    client = client_for(staff)

    first = client.get(queue_url())
    second = client.get(queue_url(page=2))

    assert listed(first) == [p.pk for p in predictions[:25]]
    assert listed(second) == [p.pk for p in predictions[25:]]
    assert 'href="?page=2"' in first.content.decode()


def test_the_queue_needs_the_same_queries_for_any_number_of_rows(
    alice, staff, cancer_v1, django_assert_max_num_queries
):
    make_predictions(user=alice, count=30)
    client = client_for(staff)
    client.get(queue_url())

    # Session, user, model, version, versions, count, page: the template queries nothing.
    with django_assert_max_num_queries(7):
        assert client.get(queue_url()).status_code == 200


def test_the_model_page_links_staff_to_the_queue(alice, staff, cancer_v1):
    url = reverse("registry:model-detail", args=["cancer"])
    link = f'href="{queue_url()}"'

    assert link in client_for(staff).get(url).content.decode()
    assert link not in client_for(alice).get(url).content.decode()
