"""The feedback API: one outcome, many, a prediction's outcome with its history, and live quality."""

from __future__ import annotations

import pytest

from feedback.models import Feedback, FeedbackChange
from predictions.tests.helpers import make_predictions, trained_model
from tests.factories import make_api_client

pytestmark = pytest.mark.django_db


def feedback_url(prediction_id):
    return f"/api/predictions/{prediction_id}/feedback/"


def test_an_owner_gives_an_outcome_and_gets_201_then_200_unchanged(cancer_v1, alice):
    (prediction,) = make_predictions(user=alice, name="cancer")
    client = make_api_client(alice)

    first = client.post(feedback_url(prediction.pk), {"correct": True, "comment": "checked"}, format="json")
    again = client.post(feedback_url(prediction.pk), {"correct": True}, format="json")

    assert first.status_code == 201, first.content
    assert first.json()["status"] == "created"
    assert first.json()["feedback"]["true_label"] == prediction.prediction
    assert first.json()["feedback"]["labelled_by"] == "alice"
    assert again.status_code == 200
    assert again.json()["status"] == "unchanged"
    assert again.json()["feedback"]["comment"] == "checked"


def test_reading_an_outcome_shows_its_history(cancer_v1, alice):
    (prediction,) = make_predictions(user=alice, name="cancer")
    client = make_api_client(alice)
    client.post(feedback_url(prediction.pk), {"correct": True}, format="json")
    client.post(feedback_url(prediction.pk), {"correct": False}, format="json")

    body = client.get(feedback_url(prediction.pk)).json()

    assert body["correct"] is False
    (change,) = body["history"]
    assert change["changed_by"] == "alice"
    assert change["old"]["correct"] is True
    assert change["new"]["correct"] is False


def test_a_prediction_without_an_outcome_reads_as_404(cancer_v1, alice):
    (prediction,) = make_predictions(user=alice, name="cancer")

    response = make_api_client(alice).get(feedback_url(prediction.pk))

    assert response.status_code == 404
    assert response.json()["code"] == "not_found"


@pytest.mark.parametrize("method", ["get", "post"])
def test_another_users_prediction_is_404_and_anonymous_is_401(cancer_v1, alice, bob, method):
    (prediction,) = make_predictions(user=alice, name="cancer")
    make_api_client(alice).post(feedback_url(prediction.pk), {"correct": True}, format="json")

    as_bob = getattr(make_api_client(bob), method)(
        feedback_url(prediction.pk), {"correct": False}, format="json"
    )
    anonymous = getattr(make_api_client(None), method)(
        feedback_url(prediction.pk), {"correct": False}, format="json"
    )

    assert as_bob.status_code == 404
    assert anonymous.status_code == 401
    assert Feedback.objects.get().correct is True


def test_staff_may_correct_anyones_outcome(cancer_v1, alice, staff):
    (prediction,) = make_predictions(user=alice, name="cancer")
    make_api_client(alice).post(feedback_url(prediction.pk), {"correct": True}, format="json")

    response = make_api_client(staff).post(feedback_url(prediction.pk), {"correct": False}, format="json")

    assert response.status_code == 200
    assert response.json()["status"] == "updated"
    assert FeedbackChange.objects.get().changed_by == staff


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"true_label": "tumour"}, "true_label"),
        ({"correct": "sure"}, "correct"),
        ({"correct": True, "colour": "red"}, "colour"),
        ({"true_value": 4.2}, "true_value"),
        ({}, "true_label"),
        ({"correct": True, "comment": "x" * 1001}, "comment"),
    ],
)
def test_bad_outcomes_are_400_naming_the_field_and_store_nothing(cancer_v1, alice, body, field):
    (prediction,) = make_predictions(user=alice, name="cancer")

    response = make_api_client(alice).post(feedback_url(prediction.pk), body, format="json")

    assert response.status_code == 400, response.content
    assert field in {e["field"] for e in response.json()["errors"]}
    assert Feedback.objects.count() == 0


@pytest.mark.parametrize(
    "raw",
    [b"[1, 2]", b'"right"', b"{", b"[" * 100 + b"]" * 100, b'{"correct": true}' * 2],
)
def test_bodies_that_are_not_one_object_are_400(cancer_v1, alice, raw):
    (prediction,) = make_predictions(user=alice, name="cancer")

    response = make_api_client(alice).post(feedback_url(prediction.pk), raw, content_type="application/json")

    assert response.status_code == 400
    assert Feedback.objects.count() == 0


def test_ids_that_cannot_be_a_prediction_are_404(cancer_v1, alice):
    client = make_api_client(alice)
    assert client.post(feedback_url(0), {"correct": True}, format="json").status_code == 404
    assert (
        client.post("/api/predictions/9" * 1 + "9" * 30 + "/feedback/", {}, format="json").status_code == 404
    )
    assert client.post("/api/predictions/abc/feedback/", {}, format="json").status_code == 404


def test_bulk_feedback_names_rows_by_id_key_and_batch_row(cancer_v1, alice):
    rows = trained_model("cancer").sample_rows[:2]
    client = make_api_client(alice)
    predicted = client.post(
        "/api/models/cancer/predict/", {"rows": rows, "keys": ["ticket-1", "ticket-2"]}, format="json"
    ).json()["predictions"]

    response = client.post(
        "/api/feedback/",
        {
            "items": [
                {"prediction": predicted[0]["id"], "correct": True},
                {"model": "cancer", "key": "ticket-2", "correct": False, "comment": "late"},
            ]
        },
        format="json",
    )

    assert response.status_code == 200, response.content
    assert response.json()["created"] == 2
    assert [r["prediction"] for r in response.json()["results"]] == [p["id"] for p in predicted]
    assert Feedback.objects.get(prediction_id=predicted[1]["id"]).comment == "late"


def test_a_bulk_request_is_all_or_nothing(cancer_v1, alice):
    predictions = make_predictions(user=alice, count=2, name="cancer")

    response = make_api_client(alice).post(
        "/api/feedback/",
        {"items": [{"prediction": predictions[0].pk, "correct": True}, {"prediction": predictions[1].pk}]},
        format="json",
    )

    assert response.status_code == 400
    assert response.json()["errors"][0]["row"] == 2
    assert Feedback.objects.count() == 0


@pytest.mark.parametrize("body", [{}, {"items": []}, {"items": "all"}, {"items": [], "extra": 1}, [1]])
def test_a_bulk_body_without_items_is_400(cancer_v1, alice, body):
    response = make_api_client(alice).post("/api/feedback/", body, format="json")
    assert response.status_code == 400
    assert response.json()["errors"][0]["field"] == "items"


def test_model_quality_lists_every_version_beside_its_holdout(cancer_v1, alice):
    predictions = make_predictions(user=alice, count=3, name="cancer")
    client = make_api_client(alice)
    for index, prediction in enumerate(predictions):
        client.post(feedback_url(prediction.pk), {"correct": index != 0}, format="json")

    body = client.get("/api/models/cancer/quality/?window=24h").json()

    (version,) = body["versions"]
    assert version["holdout"]["accuracy"] == pytest.approx(cancer_v1.metrics["accuracy"])
    assert version["live"]["n"] == 3
    assert version["live"]["accuracy"] == pytest.approx(2 / 3)
    low, high = version["live"]["accuracy_interval"]
    assert low < 2 / 3 < high
    assert version["live"]["coverage"] == {"labelled": 3, "predicted": 3, "ratio": 1.0}


def test_version_quality_and_its_bad_parameters(cancer_v1, alice):
    client = make_api_client(alice)

    assert client.get("/api/models/cancer/versions/1/quality/?window=last&last=5").status_code == 200
    assert client.get("/api/models/cancer/versions/2/quality/").status_code == 404
    assert client.get("/api/models/nope/quality/").status_code == 404
    for query in ("window=month", "window=last&last=0", "window=last&last=ten", "last=99999999"):
        response = client.get(f"/api/models/cancer/versions/1/quality/?{query}")
        assert response.status_code == 400, query
        assert response.json()["errors"][0]["field"] in {"window", "last"}


def test_model_quality_takes_a_fixed_number_of_queries(cancer_v1, alice, django_assert_max_num_queries):
    predictions = make_predictions(user=alice, count=20, name="cancer")
    client = make_api_client(alice)
    client.post(
        "/api/feedback/",
        {"items": [{"prediction": p.pk, "correct": True} for p in predictions]},
        format="json",
    )

    with django_assert_max_num_queries(8):
        assert client.get("/api/models/cancer/quality/").status_code == 200


def test_the_history_list_filters_by_feedback_state_and_channel(cancer_v1, alice):
    predictions = make_predictions(user=alice, count=3, name="cancer")
    client = make_api_client(alice)
    client.post(feedback_url(predictions[0].pk), {"correct": False}, format="json")
    client.post(feedback_url(predictions[1].pk), {"correct": True}, format="json")

    def ids(query):
        response = client.get(f"/api/predictions/?{query}")
        assert response.status_code == 200, response.content
        return {row["id"] for row in response.json()["results"]}

    assert ids("feedback=wrong") == {predictions[0].pk}
    assert ids("feedback=labelled") == {predictions[0].pk, predictions[1].pk}
    assert ids("feedback=unlabelled") == {predictions[2].pk}
    assert ids("channel=api") == {p.pk for p in predictions}
    assert ids("channel=page") == set()
    assert client.get("/api/predictions/?feedback=maybe").status_code == 400
    assert client.get("/api/predictions/?channel=fax").status_code == 400
