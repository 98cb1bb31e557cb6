"""Tests of the history's keyset (cursor) pages, in GET /api/predictions/ and on /predictions/: every row
once in order through next and previous links with the filters kept, malformed cursors and page numbers
refused with a 400 naming them, and one query for any page."""

from __future__ import annotations

import datetime as dt

import pytest
from django.core import signing
from django.test import Client
from django.utils import timezone
from rest_framework.test import APIClient

from feedback import services as feedback_services
from feedback.models import Source
from mlops_site import pagination
from predictions.models import Prediction
from predictions.tests.helpers import make_predictions


def api_client(user):
    client = APIClient()
    client.force_authenticate(user)
    return client


def page_client(user):
    client = Client()
    client.force_login(user)
    return client


def spread(predictions, *, ties=3):
    """Give the predictions distinct times, newest last, with runs of `ties` sharing one instant, so the
    id must break ties."""
    start = timezone.now() - dt.timedelta(days=1)
    for index, prediction in enumerate(predictions):
        Prediction.objects.filter(pk=prediction.pk).update(
            created_at=start + dt.timedelta(seconds=index // ties)
        )


def newest_first(ids):
    rows = Prediction.objects.filter(pk__in=ids).order_by("-created_at", "-id")
    return list(rows.values_list("pk", flat=True))


def api_walk(client, params, *, link="next", start=None):
    """Every page from the first (or from `start`) following `link`; the ids of each page."""
    pages = []
    response = client.get(start) if start else client.get("/api/predictions/", params)
    while True:
        assert response.status_code == 200, response.content
        body = response.json()
        pages.append([row["id"] for row in body["results"]])
        if body[link] is None:
            return pages, body
        response = client.get(body[link])


def test_the_api_returns_every_prediction_once_in_order_through_its_next_links(alice, cancer_v1):
    made = make_predictions(user=alice, count=23)
    spread(made)

    pages, _ = api_walk(api_client(alice), {"page_size": 5})

    assert [len(p) for p in pages] == [5, 5, 5, 5, 3]
    assert [pk for page in pages for pk in page] == newest_first([p.pk for p in made])


def test_the_api_walks_back_through_previous_links_to_the_newest_page(alice, cancer_v1):
    made = make_predictions(user=alice, count=12)
    spread(made, ties=4)
    client = api_client(alice)
    forward, last = api_walk(client, {"page_size": 5})

    backward, first = api_walk(client, None, link="previous", start=last["previous"])

    assert backward == forward[-2::-1]
    assert first["previous"] is None


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"channel": "page"}, lambda by: by["page"]),
        ({"feedback": "labelled"}, lambda by: by["labelled"]),
        ({"feedback": "wrong"}, lambda by: by["wrong"]),
        ({"feedback": "unlabelled", "channel": "api"}, lambda by: by["api"] - by["labelled"]),
        ({"model": "mixed"}, lambda by: by["mixed"]),
    ],
)
def test_the_api_keeps_its_filters_through_every_page(alice, cancer_v1, mixed_v1, params, expected):
    api = make_predictions(user=alice, count=9)
    page = make_predictions(user=alice, count=7, channel="page")
    mixed = make_predictions(user=alice, count=6, name="mixed")
    spread(api + page + mixed, ties=2)
    labelled = api[::2] + page[:3]
    for index, prediction in enumerate(labelled):
        feedback_services.feedback_give(
            prediction_id=prediction.pk, user=alice, source=Source.API, data={"correct": index % 2 == 0}
        )
    by = {
        "page": {p.pk for p in page},
        "api": {p.pk for p in api + mixed},
        "mixed": {p.pk for p in mixed},
        "labelled": {p.pk for p in labelled},
        "wrong": {p.pk for i, p in enumerate(labelled) if i % 2},
    }

    pages, _ = api_walk(api_client(alice), {**params, "page_size": 2})
    seen = [pk for page in pages for pk in page]

    assert seen == newest_first(expected(by))
    assert all(len(page) == 2 for page in pages[:-1])


def test_the_history_page_shows_every_prediction_once_through_its_older_links(alice, cancer_v1):
    made = make_predictions(user=alice, count=30, channel="page")
    make_predictions(user=alice, count=4)
    spread(made, ties=7)
    client = page_client(alice)
    seen = []
    response = client.get("/predictions/", {"channel": "page"})
    while True:
        assert response.status_code == 200
        seen += [p.pk for p in response.context["predictions"]]
        cursor = response.context["page"].next_cursor
        if cursor is None:
            break
        assert b'rel="next"' in response.content
        response = client.get("/predictions/", {"channel": "page", "cursor": cursor})

    assert seen == newest_first([p.pk for p in made])
    previous = response.context["page"].previous_cursor
    back = client.get("/predictions/", {"channel": "page", "cursor": previous})
    assert [p.pk for p in back.context["predictions"]] == seen[:25]


def test_a_user_never_pages_into_another_users_predictions(alice, bob, cancer_v1):
    own = make_predictions(user=alice, count=4)
    make_predictions(user=bob, count=4)
    spread(own)

    pages, _ = api_walk(api_client(alice), {"page_size": 3})

    assert sorted(pk for page in pages for pk in page) == sorted(p.pk for p in own)


def test_a_prediction_made_while_paging_is_never_shown_twice(alice, cancer_v1):
    made = make_predictions(user=alice, count=6)
    spread(made)
    client = api_client(alice)
    first = client.get("/api/predictions/", {"page_size": 3}).json()

    make_predictions(user=alice, count=2)
    second = client.get(first["next"]).json()

    assert [r["id"] for r in first["results"] + second["results"]] == newest_first([p.pk for p in made])


def _forged(payload):
    return signing.dumps(payload, salt=pagination.CURSOR_SALT, compress=False)


@pytest.mark.parametrize(
    "cursor",
    [
        "",
        "nonsense",
        "eyJ2IjpbXX0:tampered",
        _forged("2024-01-01"),
        _forged(["not a date", 1, 0]),
        _forged(["2024-01-01T00:00:00", 1, 0]),  # no time zone
        _forged(["2024-01-01T00:00:00+00:00", -1, 0]),
        _forged(["2024-01-01T00:00:00+00:00", 2**70, 0]),
        _forged(["2024-01-01T00:00:00+00:00", True, 0]),
        _forged(["2024-01-01T00:00:00+00:00", 1, 7]),
        signing.dumps(["2024-01-01T00:00:00+00:00", 1, 0], salt="something-else"),
        "x" * 5000,
    ],
    # Signed values carry a timestamp: ids by position keep the collected names the same in every process.
    ids=lambda cursor: f"len{len(cursor)}-{cursor[:12]}" if len(cursor) < 40 else f"len{len(cursor)}",
)
def test_a_malformed_cursor_is_a_400_naming_it_in_the_api_and_on_the_page(alice, cancer_v1, cursor):
    make_predictions(user=alice, count=2)

    response = api_client(alice).get("/api/predictions/", {"cursor": cursor})
    page = page_client(alice).get("/predictions/", {"cursor": cursor})

    assert response.status_code == 400
    (error,) = response.json()["errors"]
    assert error["field"] == "cursor"
    assert "next" in error["message"]
    assert page.status_code == 400
    assert "cursor" in page.content.decode()


def test_a_page_number_in_the_api_is_a_400_that_names_the_cursor(alice, cancer_v1):
    make_predictions(user=alice, count=2)

    response = api_client(alice).get("/api/predictions/", {"page": 2})

    assert response.status_code == 400
    (error,) = response.json()["errors"]
    assert error["field"] == "page"
    assert "cursor" in error["message"]


def test_an_old_page_number_link_to_the_history_page_shows_the_newest_page(alice, cancer_v1):
    made = make_predictions(user=alice, count=3)

    response = page_client(alice).get("/predictions/", {"page": 40})

    assert response.status_code == 200
    assert [p.pk for p in response.context["predictions"]] == newest_first([p.pk for p in made])


def test_a_deep_api_page_costs_one_query_like_the_first(
    alice, cancer_v1, mixed_v1, django_assert_num_queries
):
    made = make_predictions(user=alice, count=8) + make_predictions(user=alice, count=8, name="mixed")
    spread(made)
    client = api_client(alice)
    _, last = api_walk(client, {"page_size": 3})
    deep = last["previous"]

    with django_assert_num_queries(1) as captured:
        response = client.get(deep)

    assert response.status_code == 200
    assert len(response.json()["results"]) == 3
    # The version's metrics (with figures) and drift profile are never shown in a list: not read per row.
    (sql,) = [q["sql"] for q in captured.captured_queries]
    assert "reference_profile" not in sql
    assert '"models_registry_modelversion"."metrics"' not in sql


def test_the_schema_documents_the_cursor_and_no_page_number(alice):
    response = api_client(alice).get("/api/schema/", HTTP_ACCEPT="application/json")
    operation = response.json()["paths"]["/api/predictions/"]["get"]
    names = {p["name"] for p in operation["parameters"]}
    body = response.json()["components"]["schemas"]["PaginatedPredictionOutputList"]

    assert {"cursor", "page_size"} <= names
    assert "page" not in names
    assert set(body["properties"]) == {"next", "previous", "results"}
    assert "cursor" in operation["responses"]["400"]["description"]
