"""The feedback pages: giving an outcome from the predict, detail and history pages, every refusal, and the
live quality on the model and version pages."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from feedback import services
from feedback.models import Feedback, FeedbackChange, Source
from predictions import services as prediction_services
from predictions.models import Prediction
from predictions.tests.helpers import make_model_version, make_predictions, trained_model
from tests.factories import make_user

pytestmark = pytest.mark.django_db


def client_for(user):
    client = Client()
    client.force_login(user)
    return client


def give_url(prediction):
    return reverse("feedback:give", args=[prediction.pk])


def detail_url(prediction):
    return reverse("predictions:detail", args=[prediction.pk])


def messages_of(response):
    return [str(m) for m in response.wsgi_request._messages]


def other_class(prediction):
    return next(str(c) for c in prediction.model_version.classes if str(c) != str(prediction.prediction))


def figure_of(html, script_id):
    return json.loads(html.split(f'id="{script_id}" type="application/json">')[1].split("</script>")[0])


# ------------------------------------------------------------------------------
# Who may give feedback
# ------------------------------------------------------------------------------


def test_anonymous_visitors_are_sent_to_the_login_page(alice, cancer_v1):
    (prediction,) = make_predictions(user=alice)

    response = Client().post(give_url(prediction), {"verdict": "right"})

    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")
    assert not Feedback.objects.exists()


def test_the_owner_marks_a_prediction_wrong_with_the_true_label_and_returns_to_its_page(alice, iris_v1):
    (prediction,) = make_predictions(user=alice, name="iris")
    true_label = other_class(prediction)

    response = client_for(alice).post(give_url(prediction), {"verdict": "wrong", "true_label": true_label})

    assert response.status_code == 302
    assert response["Location"] == detail_url(prediction)
    assert messages_of(response)[-1] == "Feedback saved."
    feedback = Feedback.objects.get()
    assert (feedback.prediction_id, feedback.correct, feedback.true_label) == (
        prediction.pk,
        False,
        true_label,
    )
    assert (feedback.source, feedback.labelled_by) == (Source.PAGE, alice)


def test_wrong_on_a_binary_prediction_names_the_other_class(alice, cancer_v1):
    (prediction,) = make_predictions(user=alice)

    client_for(alice).post(give_url(prediction), {"verdict": "wrong", "comment": "  checked by the lab "})

    feedback = Feedback.objects.get()
    assert feedback.true_label == other_class(prediction)
    assert feedback.comment == "checked by the lab"


def test_another_users_prediction_is_404_and_nothing_is_stored(alice, bob, cancer_v1):
    (prediction,) = make_predictions(user=alice)

    response = client_for(bob).post(give_url(prediction), {"verdict": "right"})

    assert response.status_code == 404
    assert not Feedback.objects.exists()


def test_an_unknown_prediction_is_404(alice, cancer_v1):
    response = client_for(alice).post(reverse("feedback:give", args=[999_999]), {"verdict": "right"})

    assert response.status_code == 404


def test_staff_give_feedback_on_anyones_prediction(alice, staff, cancer_v1):
    (prediction,) = make_predictions(user=alice)

    response = client_for(staff).post(give_url(prediction), {"verdict": "right"})

    assert response.status_code == 302
    assert Feedback.objects.get().labelled_by == staff


def test_the_form_only_accepts_posts(alice, cancer_v1):
    (prediction,) = make_predictions(user=alice)

    assert client_for(alice).get(give_url(prediction)).status_code == 405


# ------------------------------------------------------------------------------
# Idempotency and history through the page
# ------------------------------------------------------------------------------


def test_the_same_label_twice_is_unchanged_and_the_history_does_not_grow(alice, iris_v1):
    (prediction,) = make_predictions(user=alice, name="iris")
    client = client_for(alice)
    data = {"verdict": "wrong", "true_label": other_class(prediction)}
    client.post(give_url(prediction), data)

    response = client.post(give_url(prediction), data)

    assert response.status_code == 302
    assert messages_of(response)[-1] == "Feedback unchanged."
    assert Feedback.objects.count() == 1
    assert FeedbackChange.objects.count() == 0


def test_a_different_outcome_replaces_the_old_one_which_the_page_shows_in_the_history(alice, staff, iris_v1):
    (prediction,) = make_predictions(user=alice, name="iris")
    wrong = other_class(prediction)
    client_for(alice).post(give_url(prediction), {"verdict": "wrong", "true_label": wrong})

    response = client_for(staff).post(give_url(prediction), {"verdict": "right", "comment": "re-checked"})

    assert messages_of(response)[-1] == "Feedback updated; the previous outcome is kept in the history."
    change = FeedbackChange.objects.get()
    assert (change.old["true_label"], change.new["true_label"]) == (wrong, str(prediction.prediction))
    page = client_for(alice).get(detail_url(prediction))
    html = page.content.decode()
    assert page.context["feedback"].correct is True
    assert 'id="feedback-history"' in html
    history = html.split('id="feedback-history"')[1].split("</table>")[0]
    assert "staff" in history
    assert f"wrong {wrong}" in history
    assert f"right {prediction.prediction}" in history
    assert "<td>Page</td>" in history
    assert "re-checked" in html


# ------------------------------------------------------------------------------
# Refusals: the form again with every problem, status 400, nothing stored
# ------------------------------------------------------------------------------


def test_an_unknown_class_is_refused_naming_the_field(alice, iris_v1):
    (prediction,) = make_predictions(user=alice, name="iris")

    response = client_for(alice).post(
        give_url(prediction), {"verdict": "wrong", "true_label": "rose", "comment": "kept"}
    )

    assert response.status_code == 400
    html = response.content.decode()
    assert "&#x27;true_label&#x27; &#x27;rose&#x27; is not a class of this model version" in html
    # The form comes back with what was typed.
    assert 'value="kept"' in html
    assert not Feedback.objects.exists()


def test_a_right_verdict_with_another_label_is_refused_as_a_contradiction(alice, iris_v1):
    (prediction,) = make_predictions(user=alice, name="iris")

    response = client_for(alice).post(
        give_url(prediction), {"verdict": "right", "true_label": other_class(prediction)}
    )

    assert response.status_code == 400
    assert "&#x27;correct&#x27; says right" in response.content.decode()
    assert not Feedback.objects.exists()


def test_a_non_number_for_a_regression_is_refused_naming_the_field(alice, diabetes_v1):
    (prediction,) = make_predictions(user=alice, name="diabetes")

    response = client_for(alice).post(give_url(prediction), {"verdict": "wrong", "true_value": "lots"})

    assert response.status_code == 400
    assert "True value: Enter a number." in response.content.decode()
    assert not Feedback.objects.exists()


def test_wrong_without_the_observed_value_of_a_regression_is_refused(alice, diabetes_v1):
    (prediction,) = make_predictions(user=alice, name="diabetes")

    response = client_for(alice).post(give_url(prediction), {"verdict": "wrong"})

    assert response.status_code == 400
    assert "saying the prediction was wrong is not enough" in response.content.decode()
    assert not Feedback.objects.exists()


def test_a_regression_outcome_is_stored_from_the_number_typed(alice, diabetes_v1):
    (prediction,) = make_predictions(user=alice, name="diabetes")

    response = client_for(alice).post(give_url(prediction), {"verdict": "wrong", "true_value": "151.5"})

    assert response.status_code == 302
    feedback = Feedback.objects.get()
    assert (feedback.true_value, feedback.correct) == (151.5, False)
    assert feedback.predicted_value == pytest.approx(prediction.prediction)


def test_a_comment_longer_than_allowed_is_refused(alice, cancer_v1):
    (prediction,) = make_predictions(user=alice)

    response = client_for(alice).post(give_url(prediction), {"verdict": "right", "comment": "x" * 1001})

    assert response.status_code == 400
    assert "&#x27;comment&#x27; is 1001 characters; at most 1000." in response.content.decode()
    assert not Feedback.objects.exists()


def test_nothing_said_is_refused(alice, iris_v1):
    (prediction,) = make_predictions(user=alice, name="iris")

    response = client_for(alice).post(give_url(prediction), {"comment": "hmm"})

    assert response.status_code == 400
    assert "Say whether the prediction was right" in response.content.decode()
    assert not Feedback.objects.exists()


@pytest.mark.parametrize(
    "unsafe", ["https://evil.example/", "//evil.example/predictions/", "javascript:alert(1)", "http:/x"]
)
def test_a_next_outside_the_site_is_ignored(alice, cancer_v1, unsafe):
    (prediction,) = make_predictions(user=alice)

    response = client_for(alice).post(give_url(prediction), {"verdict": "right", "next": unsafe})

    assert response.status_code == 302
    assert response["Location"] == detail_url(prediction)


def test_a_next_inside_the_site_is_followed(alice, cancer_v1):
    (prediction,) = make_predictions(user=alice)
    back = "/predictions/?feedback=unlabelled&page=2"

    response = client_for(alice).post(give_url(prediction), {"verdict": "right", "next": back})

    assert response["Location"] == back


def test_a_refusal_keeps_a_safe_next_and_drops_an_unsafe_one(alice, iris_v1):
    (prediction,) = make_predictions(user=alice, name="iris")
    client = client_for(alice)

    safe = client.post(give_url(prediction), {"true_label": "rose", "next": "/predictions/"})
    unsafe = client.post(give_url(prediction), {"true_label": "rose", "next": "https://evil.example/"})

    assert 'name="next" value="/predictions/"' in safe.content.decode()
    assert "evil.example" not in unsafe.content.decode()


# ------------------------------------------------------------------------------
# Where the form appears
# ------------------------------------------------------------------------------


def test_the_predict_page_shows_the_form_right_under_the_result(alice, iris_v1):
    client = client_for(alice)
    form = client.get("/predict/iris/").context["form"]
    row = trained_model("iris").sample_rows[0]

    response = client.post("/predict/iris/", {form.field_of_feature[k]: v for k, v in row.items()})

    html = response.content.decode()
    prediction = Prediction.objects.get()
    result = html.split('id="prediction-result"')[1].split("</section>\n  </section>")[0]
    assert f'action="{give_url(prediction)}"' in result
    assert 'data-verdict="right"' in result
    assert 'data-verdict="wrong"' in result
    for label in iris_v1.classes:
        assert f'<option value="{label}">{label}</option>' in result


def test_the_regression_form_asks_for_a_number(alice, diabetes_v1):
    (prediction,) = make_predictions(user=alice, name="diabetes")

    html = client_for(alice).get(detail_url(prediction)).content.decode()

    form = html.split('id="feedback"')[1]
    assert 'type="number" step="any" name="true_value"' in form
    assert 'name="true_label"' not in form


def test_the_detail_page_shows_the_current_outcome_and_the_form(alice, iris_v1):
    (prediction,) = make_predictions(user=alice, name="iris")
    services.feedback_give(
        prediction_id=prediction.pk, user=alice, source=Source.API, data={"correct": False, "comment": "odd"}
    )

    response = client_for(alice).get(detail_url(prediction))

    html = response.content.decode()
    outcome = html.split('id="current-outcome"')[1].split("</dl>")[0]
    assert "Wrong (true class not given)" in outcome
    assert "by alice via API" in outcome
    assert "odd" in outcome
    assert f'action="{give_url(prediction)}"' in html
    assert not response.context["feedback_changes"]


def test_the_detail_page_says_when_no_outcome_was_given(alice, cancer_v1):
    (prediction,) = make_predictions(user=alice)

    html = client_for(alice).get(detail_url(prediction)).content.decode()

    assert 'id="no-outcome"' in html
    assert 'id="feedback-history"' not in html


def test_the_history_list_has_a_compact_form_per_row_that_comes_back_to_the_list(alice, cancer_v1):
    predictions = make_predictions(user=alice, count=3)
    client = client_for(alice)

    html = client.get("/predictions/", {"model": "cancer"}).content.decode()

    for prediction in predictions:
        assert f'action="{give_url(prediction)}"' in html
    assert html.count('class="feedback-form compact"') == 3
    assert html.count('name="next" value="/predictions/?model=cancer"') == 3
    response = client.post(
        give_url(predictions[0]), {"verdict": "wrong", "next": "/predictions/?model=cancer"}
    )
    assert response["Location"] == "/predictions/?model=cancer"
    listed = client.get("/predictions/", {"model": "cancer"}).content.decode()
    assert listed.count("data-outcome>not labelled") == 2
    assert listed.count('class="outcome is-wrong" data-outcome>Wrong') == 1


# ------------------------------------------------------------------------------
# Live quality on the model and version pages
# ------------------------------------------------------------------------------


def live_row(html, version):
    table = html.split('id="live-quality-table"')[1].split("</table>")[0]
    return table.split(f'data-live-version="{version}"')[1].split("</tr>")[0]


def test_the_model_page_shows_the_production_version_with_nothing_labelled_yet(alice, cancer_v1):
    make_predictions(user=alice, count=2)

    response = client_for(alice).get(reverse("registry:model-detail", args=["cancer"]))

    html = response.content.decode()
    row = live_row(html, 1)
    assert "data-live-n>0<" in row
    assert "data-live-accuracy>—<" in row
    assert "0 of 2 (0.0%)" in row
    assert 'id="live-quality-empty"' in html
    assert 'id="live-quality-figure"' not in html
    # The label queue and outcome files are for staff.
    assert 'id="label-queue-link"' not in html
    assert 'id="import-outcomes-link"' not in html
    staff_html = client_for(make_user("boss", staff=True)).get(
        reverse("registry:model-detail", args=["cancer"])
    )
    assert reverse("feedback:label-queue", args=["cancer"]) in staff_html.content.decode()
    assert reverse("feedback:import-new") + "?model=cancer" in staff_html.content.decode()


def test_the_model_page_shows_live_accuracy_with_its_interval_beside_the_holdout(alice, staff, cancer_v1):
    predictions = make_predictions(user=alice, count=3)
    client = client_for(alice)
    client.post(give_url(predictions[0]), {"verdict": "wrong"})
    client.post(give_url(predictions[1]), {"verdict": "right"})

    html = client_for(staff).get(reverse("registry:model-detail", args=["cancer"])).content.decode()

    row = live_row(html, 1)
    assert "data-live-n>2<" in row
    assert "data-live-accuracy>50.0%<" in row
    assert "(9.5% to 90.5%)" in row
    assert f"{cancer_v1.metrics['accuracy'] * 100:.1f}%" in row
    assert "2 of 3 (66.7%)" in row
    assert 'href="/models/cancer/label-queue/"' in html
    figure = figure_of(html, "live-quality-figure")
    holdout, live = figure["data"][0], figure["data"][1]
    assert holdout["name"] == "Holdout"
    assert holdout["y"] == [cancer_v1.metrics["accuracy"]]
    assert live["y"] == [0.5]
    assert live["error_y"]["array"][0] == pytest.approx(0.9055 - 0.5, abs=1e-3)
    assert live["error_y"]["arrayminus"][0] == pytest.approx(0.5 - 0.0945, abs=1e-3)
    assert "plotly/plotly.min.js" in html


def test_versions_with_feedback_are_listed_production_first(alice, cancer_v1):
    (old,) = make_predictions(user=alice)
    cancer_v1.stage = "archived"
    cancer_v1.save()
    make_model_version(trained=trained_model("cancer"), name="cancer", version=2)
    make_model_version(trained=trained_model("cancer"), name="cancer", version=3, stage="staging")
    client = client_for(alice)
    client.post(give_url(old), {"verdict": "right"})

    html = client.get(reverse("registry:model-detail", args=["cancer"])).content.decode()

    table = html.split('id="live-quality-table"')[1].split("</table>")[0]
    # v2 is in production without feedback; v1 has feedback; v3 has neither and is left out.
    assert table.index('data-live-version="2"') < table.index('data-live-version="1"')
    assert 'data-live-version="3"' not in table
    figure = figure_of(html, "live-quality-figure")
    assert figure["data"][1]["x"] == ["v1"]


def test_a_regression_model_shows_live_mae_and_rmse(alice, diabetes_v1):
    (prediction,) = make_predictions(user=alice, name="diabetes")
    client = client_for(alice)
    client.post(give_url(prediction), {"true_value": str(prediction.prediction + 3)})

    html = client.get(reverse("registry:model-detail", args=["diabetes"])).content.decode()

    row = live_row(html, 1)
    assert "data-live-mae>3.0000<" in row
    assert "data-live-rmse>3.0000<" in row
    assert "data-live-n>1<" in row
    assert "MAE holdout" in html
    figure = figure_of(html, "live-quality-figure")
    assert [trace["y"] for trace in figure["data"]][:2] == [
        [diabetes_v1.metrics["mae"]],
        [pytest.approx(3.0)],
    ]


@pytest.mark.parametrize("query", [{"window": "month"}, {"window": "last", "last": "0"}])
def test_an_unknown_window_is_a_400_page_naming_it(alice, cancer_v1, query):
    for url in (
        reverse("registry:model-detail", args=["cancer"]),
        reverse("registry:version-detail", args=["cancer", 1]),
    ):
        response = client_for(alice).get(url, query)

        assert response.status_code == 400
        html = response.content.decode()
        assert f"&#x27;{'window' if query['window'] == 'month' else 'last'}&#x27; must be" in html


def test_the_window_chooses_which_labels_count(alice, cancer_v1):
    predictions = make_predictions(user=alice, count=3)
    Prediction.objects.filter(pk=predictions[0].pk).update(created_at=timezone.now() - dt.timedelta(days=10))
    client = client_for(alice)
    for prediction in predictions:
        client.post(give_url(prediction), {"verdict": "right"})
    url = reverse("registry:model-detail", args=["cancer"])

    everything = client.get(url, {"window": "all"}).content.decode()
    today = client.get(url, {"window": "24h"}).content.decode()
    week = client.get(url, {"window": "7d"}).content.decode()
    last_one = client.get(url, {"window": "last", "last": "1"}).content.decode()

    assert "data-live-n>3<" in live_row(everything, 1)
    assert "data-live-n>2<" in live_row(today, 1)
    assert "data-live-n>2<" in live_row(week, 1)
    assert "data-live-n>1<" in live_row(last_one, 1)
    assert 'data-window="24h" class="current"' in today
    assert "Last 1 labelled" in last_one
    # The last-N window counts labels, not predictions: it has no coverage.
    assert "data-live-coverage>—<" in live_row(last_one, 1)


def test_the_version_page_shows_live_figures_per_class_and_a_confusion_matrix(alice, iris_v1):
    predictions = make_predictions(user=alice, count=3, name="iris")
    client = client_for(alice)
    predicted = str(predictions[0].prediction)
    wrong = other_class(predictions[0])
    client.post(give_url(predictions[0]), {"verdict": "right"})
    client.post(give_url(predictions[1]), {"verdict": "wrong", "true_label": wrong})
    client.post(give_url(predictions[2]), {"verdict": "wrong"})

    response = client.get(reverse("registry:version-detail", args=["iris", 1]))

    html = response.content.decode()
    section = html.split('id="live-quality"')[1].split("</section>")[0]
    assert "data-live-n>3 (1 right)<" in section
    assert "data-live-accuracy>33.3%<" in section
    assert "data-live-unknown>1<" in section
    per_class = section.split('id="live-per-class"')[1].split("</table>")[0]
    assert (
        f'data-class="{predicted}"><td><code>{predicted}</code></td><td class="num">0.333</td>' in per_class
    )
    figure = figure_of(html, "figure-live-confusion")
    heatmap = figure["data"][0]
    assert heatmap["x"][-1] == "unknown (wrong)"
    assert heatmap["y"] == [str(c) for c in iris_v1.classes]
    row = heatmap["z"][heatmap["y"].index(predicted)]
    assert row[heatmap["x"].index(predicted)] == 1
    assert row[heatmap["x"].index(wrong)] == 1
    assert row[-1] == 1
    assert "plotly/plotly.min.js" in html


def test_the_version_page_without_feedback_says_so_and_draws_no_live_chart(alice, cancer_v1):
    html = client_for(alice).get(reverse("registry:version-detail", args=["cancer", 1])).content.decode()

    assert "data-live-n>0<" in html
    assert 'id="live-quality-empty"' in html
    assert "figure-live-confusion" not in html


def test_a_regression_version_page_shows_mae_and_no_class_table(alice, diabetes_v1):
    (prediction,) = make_predictions(user=alice, name="diabetes")
    client = client_for(alice)
    client.post(give_url(prediction), {"true_value": str(prediction.prediction - 2)})

    html = client.get(reverse("registry:version-detail", args=["diabetes", 1])).content.decode()

    assert "data-live-mae>2.0000<" in html
    assert "live-per-class" not in html


# ------------------------------------------------------------------------------
# Queries
# ------------------------------------------------------------------------------


def test_the_model_pages_live_quality_needs_the_same_queries_for_any_number_of_labels(
    alice, staff, cancer_v1, django_assert_num_queries
):
    url = reverse("registry:model-detail", args=["cancer"])
    client = client_for(staff)
    (first,) = make_predictions(user=alice)
    services.feedback_give(prediction_id=first.pk, user=staff, source=Source.API, data={"correct": True})
    client.get(url)
    with CaptureQueriesContext(connection) as few:
        client.get(url)
    # Counted now: the captured slice of the query log is gone after the next request.
    expected = len(few)
    # The registry's own reads plus four for live quality (versions, labels, volumes, delays) and three
    # for the retraining panel.
    assert 0 < expected <= 14
    # Three more versions with labels, and more labels on the first: the same queries.
    rows = trained_model("cancer").sample_rows
    for number in (2, 3, 4):
        make_model_version(trained=trained_model("cancer"), name="cancer", version=number, stage="none")
        outcome = prediction_services.prediction_make(
            registered_model_name="cancer", rows=rows, user=alice, channel="api", version=number
        )
        services.feedback_give_many(
            items=[{"prediction": p.pk, "correct": False} for p in outcome.predictions],
            user=staff,
            source=Source.API,
        )
    for prediction in make_predictions(user=alice, count=20)[::2]:
        services.feedback_give(
            prediction_id=prediction.pk, user=staff, source=Source.API, data={"correct": False}
        )

    with django_assert_num_queries(expected):
        response = client.get(url)

    html = response.content.decode()
    assert "data-live-n>11<" in live_row(html, 1)
    for number in (2, 3, 4):
        assert f"data-live-n>{len(rows)}<" in live_row(html, number)


def test_the_detail_page_needs_the_same_queries_however_long_the_history(
    alice, staff, iris_v1, django_assert_num_queries
):
    (prediction,) = make_predictions(user=alice, name="iris")
    labels = [str(c) for c in iris_v1.classes]
    client = client_for(alice)
    client.post(give_url(prediction), {"true_label": labels[0]})
    client.post(give_url(prediction), {"true_label": labels[1]})
    with CaptureQueriesContext(connection) as short:
        client.get(detail_url(prediction))
    # Counted now: the captured slice of the query log is gone after the next request.
    expected = len(short)
    assert 0 < expected <= 8
    for label in (labels[2], labels[0], labels[1]):
        client_for(staff).post(give_url(prediction), {"true_label": label})

    with django_assert_num_queries(expected):
        response = client.get(detail_url(prediction))

    assert len(response.context["feedback_changes"]) == 4


def test_classes_stored_as_whole_floats_are_offered_as_the_service_names_them():
    from feedback.templatetags.feedback_pages import class_text, duration, percent

    assert [class_text(c) for c in (0.0, 1.0, 2.5, 3, "yes")] == ["0", "1", "2.5", "3", "yes"]
    assert [percent(v) for v in (None, 0, 0.8333)] == ["—", "0.0%", "83.3%"]
    assert [duration(s) for s in (None, 42, 720, 5400, 3 * 86400)] == [
        "—",
        "42 s",
        "12 min",
        "1.5 h",
        "3.0 days",
    ]
