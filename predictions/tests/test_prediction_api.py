"""Tests of GET /api/predictions/: own predictions only (staff: all), 404 for others' ids, filters, pages."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from predictions.models import Prediction
from predictions.tests.helpers import make_predictions


def client_for(user):
    client = APIClient()
    client.force_authenticate(user)
    return client


def ids_of(response):
    assert response.status_code == 200, response.content
    return [item["id"] for item in response.json()["results"]]


def test_a_user_lists_only_their_own_predictions(alice, bob, cancer_v1):
    own = make_predictions(user=alice, count=2)
    make_predictions(user=bob, count=3)

    response = client_for(alice).get("/api/predictions/")

    assert sorted(ids_of(response)) == sorted(p.pk for p in own)
    assert response.json()["next"] is None


def test_staff_list_everyones_predictions_with_the_user(alice, bob, staff, cancer_v1):
    make_predictions(user=alice, count=2)
    make_predictions(user=bob, count=3)

    response = client_for(staff).get("/api/predictions/")

    assert len(ids_of(response)) == 5
    assert {item["user"] for item in response.json()["results"]} == {"alice", "bob"}


def test_a_user_fetching_another_users_prediction_by_id_gets_404(alice, charlie, cancer_v1):
    (prediction,) = make_predictions(user=alice)

    response = client_for(charlie).get(f"/api/predictions/{prediction.pk}/")

    assert response.status_code == 404
    # Indistinguishable from an id that does not exist.
    assert response.json() == client_for(charlie).get("/api/predictions/999999/").json()


def test_a_user_fetches_their_own_prediction_with_its_trace(alice, cancer_v1):
    (prediction,) = make_predictions(user=alice)

    response = client_for(alice).get(f"/api/predictions/{prediction.pk}/")

    assert response.status_code == 200
    body = response.json()
    stored = Prediction.objects.select_related("request").get()
    assert body["id"] == stored.pk
    assert (body["model"], body["model_version"], body["user"], body["channel"]) == (
        "cancer",
        1,
        "alice",
        "api",
    )
    assert body["request_id"] == stored.request.request_id
    assert body["inputs"] == stored.inputs
    assert body["prediction"] == stored.prediction
    assert body["probabilities"] == stored.probabilities
    assert body["latency_ms"] == pytest.approx(stored.request.latency_ms)


def test_staff_fetch_any_prediction(alice, staff, cancer_v1):
    (prediction,) = make_predictions(user=alice)

    assert client_for(staff).get(f"/api/predictions/{prediction.pk}/").status_code == 200


@pytest.mark.parametrize("lookup", ["abc", "1.5", "-1", "9" * 30])
def test_a_malformed_id_is_404_not_500(alice, cancer_v1, lookup):
    assert client_for(alice).get(f"/api/predictions/{lookup}/").status_code == 404


def test_anonymous_callers_get_401(cancer_v1, alice):
    (prediction,) = make_predictions(user=alice)

    assert APIClient().get("/api/predictions/").status_code == 401
    assert APIClient().get(f"/api/predictions/{prediction.pk}/").status_code == 401


def test_the_list_filters_by_model(alice, cancer_v1, mixed_v1):
    make_predictions(user=alice, count=2)
    mixed = make_predictions(user=alice, count=1, name="mixed")

    response = client_for(alice).get("/api/predictions/", {"model": "mixed"})

    assert ids_of(response) == [p.pk for p in mixed]


def test_the_list_filters_by_date_range(alice, cancer_v1):
    old, middle, new = (make_predictions(user=alice)[0] for _ in range(3))
    now = timezone.now()
    Prediction.objects.filter(pk=old.pk).update(created_at=now - dt.timedelta(days=10))
    Prediction.objects.filter(pk=middle.pk).update(created_at=now - dt.timedelta(days=5))
    client = client_for(alice)
    day = (timezone.localdate() - dt.timedelta(days=5)).isoformat()

    assert ids_of(client.get("/api/predictions/", {"created_after": day})) == [new.pk, middle.pk]
    assert ids_of(client.get("/api/predictions/", {"created_before": day})) == [middle.pk, old.pk]
    assert ids_of(client.get("/api/predictions/", {"created_after": day, "created_before": day})) == [
        middle.pk
    ]
    moment = (now - dt.timedelta(days=7)).isoformat()
    assert ids_of(client.get("/api/predictions/", {"created_before": moment})) == [old.pk]


@pytest.mark.parametrize(
    "params",
    [
        {"created_after": "yesterday"},
        {"created_after": "2024-02-30"},
        {"created_after": "2024-05-03", "created_before": "2024-05-01"},
    ],
)
def test_an_invalid_date_filter_is_400(alice, cancer_v1, params):
    response = client_for(alice).get("/api/predictions/", params)

    assert response.status_code == 400


def test_the_list_is_paginated_newest_first(alice, cancer_v1):
    made = make_predictions(user=alice, count=5)
    expected = sorted((p.pk for p in made), reverse=True)
    client = client_for(alice)

    first = client.get("/api/predictions/", {"page_size": 2})
    second = client.get(first.json()["next"])

    assert set(first.json()) == {"next", "previous", "results"}
    assert first.json()["previous"] is None
    assert ids_of(first) == expected[:2]
    assert ids_of(second) == expected[2:4]


def test_the_list_runs_a_fixed_number_of_queries(alice, bob, cancer_v1, mixed_v1, django_assert_num_queries):
    make_predictions(user=alice, count=3)
    make_predictions(user=alice, count=3, name="mixed")
    client = client_for(alice)

    # The page itself, with version, model, user and request joined: a keyset page has no count query.
    with django_assert_num_queries(1):
        response = client.get("/api/predictions/")

    assert len(ids_of(response)) == 6
