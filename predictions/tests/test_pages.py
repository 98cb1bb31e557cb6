"""Tests of the prediction pages: the schema-built form, the result, history and its filters, permissions."""

from __future__ import annotations

import datetime as dt
import json
from urllib.parse import quote

from django.test import Client
from django.utils import timezone

from feedback import services as feedback_services
from models_registry.models import RegisteredModel
from predictions.models import Prediction, PredictionRequest
from predictions.tests.helpers import make_model_version, make_predictions, trained_model
from tests.factories import make_user


def client_for(user):
    client = Client()
    client.force_login(user)
    return client


def form_data(form, row):
    return {form.field_of_feature[name]: value for name, value in row.items()}


def test_pages_need_a_login(cancer_v1):
    for url in ("/predict/", "/predict/cancer/", "/predictions/", "/predictions/1/"):
        response = Client().get(url)
        assert response.status_code == 302
        assert response["Location"].startswith("/accounts/login/")


def test_the_index_lists_models_with_a_production_version_only(alice, cancer_v1, db):
    make_model_version(trained=trained_model("iris"), name="iris", stage="staging")

    response = client_for(alice).get("/predict/")

    assert response.status_code == 200
    assert [v.registered_model.name for v in response.context["versions"]] == ["cancer"]
    assert b'href="/predict/cancer/"' in response.content
    assert b"/predict/iris/" not in response.content


def test_the_form_has_one_input_per_feature_with_the_training_range(alice, mixed_v1):
    response = client_for(alice).get("/predict/mixed/")

    assert response.status_code == 200
    form = response.context["form"]
    schema = trained_model("mixed").feature_schema
    assert [field.label for field in form] == [c["name"] for c in schema]
    html = response.content.decode()
    age = schema[0]
    assert f'placeholder="{age["min"]:g} to {age["max"]:g}"' in html
    assert f"Training range: {age['min']:g} to {age['max']:g}." in html
    assert 'inputmode="decimal"' in html
    # The categorical feature is a select of the categories seen in training.
    city = form[form.field_of_feature["city"]]
    assert city.field.widget.input_type == "select"
    assert [value for value, _ in city.field.widget.choices] == ["", "Berlin", "Paris", "Rome"]
    assert '<option value="Rome">Rome</option>' in html
    assert "Production version 1" in html


def test_submitting_the_form_shows_the_prediction_the_version_and_a_link(alice, mixed_v1):
    client = client_for(alice)
    form = client.get("/predict/mixed/").context["form"]

    response = client.post(
        "/predict/mixed/", form_data(form, {"age": "41", "income": "61000.5", "city": "Paris"})
    )

    assert response.status_code == 200
    prediction = Prediction.objects.get()
    assert (prediction.channel, prediction.user) == ("page", alice)
    assert prediction.inputs == {"age": 41.0, "income": 61000.5, "city": "Paris"}
    assert response.context["result"] == prediction
    html = response.content.decode()
    assert f'href="/predictions/{prediction.pk}/"' in html
    assert "mixed v1" in html
    assert f'<p class="predicted-value" id="predicted-value">{prediction.prediction}</p>' in html
    chart = response.context["chart"]
    assert chart["classes"] == ["no", "yes"]
    assert chart["probabilities"] == [prediction.probabilities["no"], prediction.probabilities["yes"]]
    assert 'id="probability-chart-data"' in html
    assert "plotly/plotly.min.js" in html


def test_an_invalid_value_is_shown_on_its_field_and_nothing_is_stored(alice, mixed_v1):
    client = client_for(alice)
    form = client.get("/predict/mixed/").context["form"]

    response = client.post(
        "/predict/mixed/", form_data(form, {"age": "old", "income": "inf", "city": "Paris"})
    )

    assert response.status_code == 400
    errors = response.context["form"].errors
    assert errors[form.field_of_feature["age"]] == ["'age' must be a number; got 'old'."]
    assert "finite" in errors[form.field_of_feature["income"]][0]
    assert PredictionRequest.objects.count() == 0
    assert Prediction.objects.count() == 0


def test_a_number_beyond_float32_or_an_overlong_category_on_the_form_is_refused_on_its_field(
    alice, mixed_v1, settings
):
    settings.PREDICTION_MAX_TEXT_CHARS = 20
    client = client_for(alice)
    form = client.get("/predict/mixed/").context["form"]

    response = client.post(
        "/predict/mixed/", form_data(form, {"age": "1e308", "income": "-1e39", "city": "P" * 21})
    )

    assert response.status_code == 400
    errors = response.context["form"].errors
    assert "beyond the largest number the model can represent" in errors[form.field_of_feature["age"]][0]
    assert "beyond the largest number" in errors[form.field_of_feature["income"]][0]
    assert "at most 20 characters" in errors[form.field_of_feature["city"]][0]
    assert Prediction.objects.count() == 0


def test_an_unknown_category_posted_to_the_form_is_predicted_with_a_warning(alice, mixed_v1):
    client = client_for(alice)
    form = client.get("/predict/mixed/").context["form"]

    response = client.post(
        "/predict/mixed/", form_data(form, {"age": "30", "income": "50000", "city": "Oslo"})
    )

    assert response.status_code == 200
    assert "was not seen in training" in response.content.decode()


def test_a_model_without_a_production_version_is_a_409_page(alice, db):
    make_model_version(trained=trained_model("cancer"), stage="staging")

    response = client_for(alice).get("/predict/cancer/")

    assert response.status_code == 409
    assert b"no production version" in response.content


def test_an_unknown_model_page_is_404(alice, cancer_v1):
    assert client_for(alice).get("/predict/nope/").status_code == 404


def test_the_history_shows_only_the_users_own_predictions(alice, bob, cancer_v1):
    own = make_predictions(user=alice, count=2)
    make_predictions(user=bob, count=2)

    response = client_for(alice).get("/predictions/")

    assert response.status_code == 200
    assert [p.pk for p in response.context["predictions"]] == sorted((p.pk for p in own), reverse=True)
    assert not response.context["show_user"]
    assert b"<th>User</th>" not in response.content


def test_staff_see_everyones_history_with_a_user_column(alice, bob, staff, cancer_v1):
    make_predictions(user=alice, count=2)
    make_predictions(user=bob, count=1)

    response = client_for(staff).get("/predictions/")

    assert len(response.context["predictions"]) == 3
    assert b"<th>User</th>" in response.content
    assert b"<td>bob</td>" in response.content


def test_the_history_filters_by_model_and_date(alice, cancer_v1, mixed_v1):
    make_predictions(user=alice, count=2)
    (mixed,) = make_predictions(user=alice, name="mixed")
    old = make_predictions(user=alice, name="mixed")[0]
    Prediction.objects.filter(pk=old.pk).update(created_at=timezone.now() - dt.timedelta(days=3))
    client = client_for(alice)
    today = timezone.localdate().isoformat()

    by_model = client.get("/predictions/", {"model": "mixed"})
    by_both = client.get("/predictions/", {"model": "mixed", "created_after": today})

    assert [p.pk for p in by_model.context["predictions"]] == [mixed.pk, old.pk]
    assert [p.pk for p in by_both.context["predictions"]] == [mixed.pk]
    assert '<option value="mixed" selected>mixed</option>' in by_both.content.decode()
    # A model without versions cannot have predictions, so the filter does not offer it.
    RegisteredModel.objects.create(name="empty", task="classification")
    offered = client.get("/predictions/").context["form"].fields["model"].widget.choices
    assert offered == [("", "All models"), ("cancer", "cancer"), ("mixed", "mixed")]


def test_an_invalid_history_filter_is_400_with_the_message(alice, cancer_v1):
    response = client_for(alice).get("/predictions/", {"created_after": "soon"})

    assert response.status_code == 400
    assert "is not a date" in response.content.decode()


def test_the_history_is_paginated_and_keeps_the_filters(alice, cancer_v1):
    make_predictions(user=alice, count=30)
    client = client_for(alice)

    first = client.get("/predictions/", {"model": "cancer"})
    cursor = first.context["page"].next_cursor
    second = client.get("/predictions/", {"model": "cancer", "cursor": cursor})

    assert len(first.context["predictions"]) == 25
    assert len(second.context["predictions"]) == 5
    assert f'href="?model=cancer&amp;cursor={quote(cursor, safe="")}" rel="next"'.encode() in first.content
    assert not {p.pk for p in first.context["predictions"]} & {p.pk for p in second.context["predictions"]}


def test_the_history_page_runs_a_fixed_number_of_queries(
    alice, cancer_v1, mixed_v1, django_assert_num_queries
):
    make_predictions(user=alice, count=3)
    make_predictions(user=alice, count=3, name="mixed")
    client = client_for(alice)
    client.get("/predictions/")

    # Session, user, model names and the page (keyset: no count): the template itself queries nothing.
    with django_assert_num_queries(4):
        client.get("/predictions/")


def test_the_detail_page_shows_the_trace_of_a_prediction(alice, mixed_v1):
    (prediction,) = make_predictions(user=alice, name="mixed")

    response = client_for(alice).get(f"/predictions/{prediction.pk}/")

    assert response.status_code == 200
    html = response.content.decode()
    assert "mixed v1" in html
    assert prediction.request.request_id in html
    assert [row["name"] for row in response.context["inputs"]] == ["age", "income", "city"]
    data = json.loads(
        html.split('id="probability-chart-data" type="application/json">')[1].split("</script>")[0]
    )
    assert data["classes"] == ["no", "yes"]
    assert 'id="feedback"' in html


def test_another_users_prediction_page_is_404_and_staff_see_it(alice, charlie, cancer_v1):
    (prediction,) = make_predictions(user=alice)
    staff = make_user("auditor", staff=True)

    assert client_for(charlie).get(f"/predictions/{prediction.pk}/").status_code == 404
    assert client_for(alice).get(f"/predictions/{prediction.pk}/").status_code == 200
    assert client_for(staff).get(f"/predictions/{prediction.pk}/").status_code == 200


def test_a_model_file_that_cannot_be_read_is_a_503_page_and_nothing_is_stored(alice, mixed_v1, monkeypatch):
    from mlops_site import storage

    client = client_for(alice)
    form = client.get("/predict/mixed/").context["form"]
    monkeypatch.setattr(storage, "read_bytes", lambda key: None)

    response = client.post(
        "/predict/mixed/", form_data(form, {"age": "30", "income": "50000", "city": "Rome"})
    )

    assert response.status_code == 503
    assert "missing from storage" in response.content.decode()
    assert Prediction.objects.count() == 0


def test_a_regression_result_shows_the_number_and_no_chart(alice, db):
    diabetes = trained_model("diabetes", algorithm="ridge")
    make_model_version(trained=diabetes, name="diabetes")
    client = client_for(alice)
    form = client.get("/predict/diabetes/").context["form"]

    response = client.post("/predict/diabetes/", form_data(form, diabetes.sample_rows[0]))

    assert response.status_code == 200
    assert response.context["chart"] is None
    assert b"probability-chart-data" not in response.content
    stored = Prediction.objects.get()
    assert isinstance(stored.prediction, float)
    assert f'id="predicted-value">{stored.prediction:.6g}</p>' in response.content.decode()


# ------------------------------------------------------------------------------
# The history's feedback: filters by outcome and channel, a feedback column, no extra queries
# ------------------------------------------------------------------------------


def _give(prediction, user, **data):
    return feedback_services.feedback_give(prediction_id=prediction.pk, user=user, source="api", data=data)


def test_the_history_filters_by_feedback_state(alice, cancer_v1):
    right, wrong, unlabelled = make_predictions(user=alice, count=3)
    _give(right, alice, correct=True)
    _give(wrong, alice, correct=False)
    client = client_for(alice)

    def ids(**query):
        response = client.get("/predictions/", query)
        assert response.status_code == 200
        return sorted(p.pk for p in response.context["predictions"])

    assert ids(feedback="labelled") == sorted([right.pk, wrong.pk])
    assert ids(feedback="unlabelled") == [unlabelled.pk]
    assert ids(feedback="wrong") == [wrong.pk]
    html = client.get("/predictions/", {"feedback": "wrong"}).content.decode()
    assert '<option value="wrong" selected>Marked wrong</option>' in html
    assert "<th>Feedback</th>" in html


def test_the_history_filters_by_channel(alice, cancer_v1):
    (api,) = make_predictions(user=alice, channel="api")
    (page,) = make_predictions(user=alice, channel="page")
    client = client_for(alice)

    by_page = client.get("/predictions/", {"channel": "page"})
    by_api = client.get("/predictions/", {"channel": "api", "feedback": "unlabelled"})

    assert [p.pk for p in by_page.context["predictions"]] == [page.pk]
    assert [p.pk for p in by_api.context["predictions"]] == [api.pk]
    assert '<option value="page" selected>Page</option>' in by_page.content.decode()


def test_an_unknown_feedback_state_or_channel_is_400_with_the_message(alice, cancer_v1):
    client = client_for(alice)

    for query in ({"feedback": "maybe"}, {"channel": "fax"}):
        response = client.get("/predictions/", query)

        assert response.status_code == 400
        assert "Select a valid choice." in response.content.decode()


def test_the_history_shows_each_outcome_in_the_feedback_column(alice, cancer_v1):
    right, wrong, _ = make_predictions(user=alice, count=3)
    _give(right, alice, correct=True)
    _give(wrong, alice, correct=False)

    html = client_for(alice).get("/predictions/").content.decode()

    assert html.count('class="outcome is-right" data-outcome>Right</span>') == 1
    assert html.count('class="outcome is-wrong" data-outcome>Wrong: ') == 1
    assert html.count("data-outcome>not labelled</span>") == 1


def test_the_history_with_feedback_and_forms_runs_the_same_fixed_number_of_queries(
    alice, cancer_v1, mixed_v1, django_assert_num_queries
):
    predictions = make_predictions(user=alice, count=4) + make_predictions(user=alice, count=3, name="mixed")
    for prediction in predictions[::2]:
        _give(prediction, alice, correct=False)
    client = client_for(alice)
    client.get("/predictions/")

    # Session, user, model names and the page (keyset: no count): outcomes and forms query nothing.
    with django_assert_num_queries(4):
        response = client.get("/predictions/")

    assert response.content.decode().count('class="feedback-form compact"') == 7
