"""Giving outcomes through the services: idempotency, history, rollups, references and every refusal."""

from __future__ import annotations

import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from feedback import reconcile, selectors, services
from feedback.models import DelayHourly, Feedback, FeedbackChange, QualityHourly, Source
from predictions import services as prediction_services
from predictions.models import Prediction
from predictions.tests.helpers import make_predictions, trained_model

pytestmark = pytest.mark.django_db


def give(prediction, user, source=Source.API, **data):
    return services.feedback_give(prediction_id=prediction.pk, user=user, source=source, data=data)


def other_class(version, prediction):
    return next(str(c) for c in version.classes if str(c) != str(prediction.prediction))


def cells(version):
    return {
        (row.predicted, row.actual): row.n
        for row in QualityHourly.objects.filter(model_version=version)
        if row.n
    }


def test_right_stores_the_predicted_class_as_the_true_one(iris_v1, alice):
    (prediction,) = make_predictions(user=alice, name="iris")

    stored = give(prediction, alice, correct=True)

    assert stored.status == "created"
    feedback = Feedback.objects.get()
    assert feedback.true_label == str(prediction.prediction)
    assert feedback.correct is True
    assert feedback.source == "api"
    assert feedback.labelled_by == alice
    assert cells(iris_v1) == {(str(prediction.prediction), str(prediction.prediction)): 1}


def test_the_same_outcome_again_changes_nothing(iris_v1, alice):
    (prediction,) = make_predictions(user=alice, name="iris")
    give(prediction, alice, correct=True)

    again = give(prediction, alice, true_label=prediction.prediction)

    assert again.status == "unchanged"
    assert FeedbackChange.objects.count() == 0
    assert sum(cells(iris_v1).values()) == 1


def test_a_different_outcome_replaces_it_and_keeps_the_old_one_in_the_history(iris_v1, alice, staff):
    (prediction,) = make_predictions(user=alice, name="iris")
    give(prediction, alice, source=Source.PAGE, correct=True)
    truth = other_class(iris_v1, prediction)

    stored = give(prediction, staff, true_label=truth)

    assert stored.status == "updated"
    feedback = Feedback.objects.get()
    assert (feedback.true_label, feedback.correct, feedback.labelled_by) == (truth, False, staff)
    (change,) = FeedbackChange.objects.all()
    assert change.changed_by == staff
    assert change.source == "api"
    assert change.old["true_label"] == str(prediction.prediction)
    assert change.old["source"] == "page"
    assert change.old["labelled_by"] == alice.pk
    assert change.new["true_label"] == truth
    # The count moved from the right cell to the wrong one.
    assert cells(iris_v1) == {(str(prediction.prediction), truth): 1}


def test_wrong_on_a_binary_model_names_the_other_class(cancer_v1, alice):
    (prediction,) = make_predictions(user=alice, name="cancer")

    give(prediction, alice, correct=False)

    assert Feedback.objects.get().true_label == other_class(cancer_v1, prediction)


def test_wrong_on_a_multi_class_model_without_a_label_leaves_the_true_class_unknown(iris_v1, alice):
    (prediction,) = make_predictions(user=alice, name="iris")

    give(prediction, alice, correct=False)

    assert Feedback.objects.get().true_label == ""
    live = selectors.version_quality(version=iris_v1)["live"]
    assert (live["n"], live["accuracy"], live["unknown_true_class"]) == (1, 0.0, 1)


def test_a_regression_outcome_feeds_mae_and_rmse(diabetes_v1, alice):
    predictions = make_predictions(user=alice, count=3, name="diabetes")
    truths = [float(p.prediction) + delta for p, delta in zip(predictions, (3.0, -4.0, 0.0), strict=True)]

    services.feedback_give_many(
        items=[{"prediction": p.pk, "true_value": t} for p, t in zip(predictions, truths, strict=True)],
        user=alice,
        source=Source.API,
    )

    live = selectors.version_quality(version=diabetes_v1)["live"]
    assert live["n"] == 3
    assert live["mae"] == pytest.approx(7 / 3, rel=1e-6)
    assert live["rmse"] == pytest.approx(math.sqrt(25 / 3), rel=1e-6)
    assert live["coverage"] == {"labelled": 3, "predicted": 3, "ratio": 1.0}


def test_right_on_a_regression_model_means_the_prediction_was_exact(diabetes_v1, alice):
    (prediction,) = make_predictions(user=alice, name="diabetes")

    give(prediction, alice, correct=True)

    assert Feedback.objects.get().true_value == pytest.approx(float(prediction.prediction))
    assert selectors.version_quality(version=diabetes_v1)["live"]["mae"] == pytest.approx(0.0)


def test_coverage_counts_labelled_against_predicted(cancer_v1, alice):
    predictions = make_predictions(user=alice, count=4, name="cancer")

    give(predictions[0], alice, correct=True)

    live = selectors.version_quality(version=cancer_v1, window="24h")["live"]
    assert live["coverage"] == {"labelled": 1, "predicted": 4, "ratio": 0.25}
    assert DelayHourly.objects.get().n == 1


def test_a_prediction_can_be_named_by_the_clients_key(cancer_v1, alice):
    rows = trained_model("cancer").sample_rows[:2]
    outcome = prediction_services.prediction_make(
        registered_model_name="cancer", rows=rows, user=alice, channel="api", keys=["order-1", "order-2"]
    )

    services.feedback_give_many(
        items=[{"model": "cancer", "key": "order-2", "correct": True}], user=alice, source=Source.API
    )

    assert Feedback.objects.get().prediction == outcome.predictions[1]


def test_another_users_prediction_is_not_found_by_id_or_key(cancer_v1, alice, bob):
    rows = trained_model("cancer").sample_rows[:1]
    outcome = prediction_services.prediction_make(
        registered_model_name="cancer", rows=rows, user=alice, channel="api", keys=["k-1"]
    )

    with pytest.raises(services.PredictionNotFound):
        give(outcome.predictions[0], bob, correct=True)
    with pytest.raises(services.FeedbackInvalid) as refused:
        services.feedback_give_many(
            items=[{"model": "cancer", "key": "k-1", "correct": True}], user=bob, source=Source.API
        )
    assert refused.value.errors[0]["code"] == "not_found"
    assert Feedback.objects.count() == 0


def test_staff_may_label_anyones_prediction(cancer_v1, alice, staff):
    (prediction,) = make_predictions(user=alice, name="cancer")

    assert give(prediction, staff, correct=True).status == "created"


def test_a_bulk_request_with_one_bad_item_stores_nothing_and_names_every_problem(iris_v1, alice):
    predictions = make_predictions(user=alice, count=3, name="iris")

    with pytest.raises(services.FeedbackInvalid) as refused:
        services.feedback_give_many(
            items=[
                {"prediction": predictions[0].pk, "correct": True},
                {"prediction": predictions[1].pk, "true_label": "rose"},
                {"prediction": predictions[0].pk, "correct": False},
                {"prediction": 10**12, "correct": True},
                {"prediction": predictions[2].pk},
                {"prediction": predictions[2].pk, "correct": "maybe", "colour": "red"},
            ],
            user=alice,
            source=Source.API,
        )

    problems = {(p["row"], p["field"], p["code"]) for p in refused.value.errors}
    assert (2, "true_label", "unknown_class") in problems
    assert (3, "prediction", "duplicate") in problems
    assert (4, "prediction", "not_found") in problems
    assert (5, "true_label", "invalid") in problems
    assert (6, "colour", "invalid") in problems
    assert Feedback.objects.count() == 0
    assert QualityHourly.objects.count() == 0


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"true_label": True}, "true_label"),
        ({"true_label": float("nan")}, "true_label"),
        ({"true_label": ["setosa"]}, "true_label"),
        ({"true_value": 3.0}, "true_value"),
        ({"correct": "yes"}, "correct"),
        ({"correct": 1}, "correct"),
        ({"correct": True, "comment": "x" * 1001}, "comment"),
        ({"correct": True, "comment": 5}, "comment"),
        ({"correct": True, "comment": "a\x00b"}, "comment"),
    ],
)
def test_bad_classification_outcomes_are_refused_by_field(iris_v1, alice, data, field):
    (prediction,) = make_predictions(user=alice, name="iris")

    with pytest.raises(services.FeedbackInvalid) as refused:
        give(prediction, alice, **data)

    assert field in {p["field"] for p in refused.value.errors}
    assert Feedback.objects.count() == 0


def test_a_label_that_contradicts_correct_is_refused(iris_v1, alice):
    (prediction,) = make_predictions(user=alice, name="iris")

    with pytest.raises(services.FeedbackInvalid) as refused:
        give(prediction, alice, correct=True, true_label=other_class(iris_v1, prediction))

    assert refused.value.errors[0]["code"] == "contradiction"


@pytest.mark.parametrize(
    "data",
    [
        {"true_value": "3.5"},
        {"true_value": float("inf")},
        {"true_value": 1e300},
        {"true_value": 10**400},
        {"true_value": True},
        {"correct": False},
        {"true_label": "high"},
        {},
    ],
)
def test_bad_regression_outcomes_are_refused(diabetes_v1, alice, data):
    (prediction,) = make_predictions(user=alice, name="diabetes")

    with pytest.raises(services.FeedbackInvalid):
        give(prediction, alice, **data)

    assert Feedback.objects.count() == 0


def test_values_read_from_a_file_are_parsed_from_text(diabetes_v1, cancer_v1, alice):
    (number,) = make_predictions(user=alice, name="diabetes")
    (label,) = make_predictions(user=alice, name="cancer")

    result = services.feedback_check(
        [
            {"prediction": str(number.pk), "true_value": " 12.5 ", "correct": ""},
            {"prediction": str(label.pk), "correct": "Wrong", "true_label": ""},
        ],
        user=alice,
        text=True,
    )

    assert result.problems == []
    assert [c.outcome.true_value for c in result.valid] == [12.5, None]
    assert result.valid[1].outcome.correct is False


def test_an_unknown_prediction_id_is_a_not_found(cancer_v1, alice):
    with pytest.raises(services.PredictionNotFound):
        services.feedback_give(prediction_id=0, user=alice, source=Source.API, data={"correct": True})
    with pytest.raises(services.PredictionNotFound):
        services.feedback_give(prediction_id=999_999, user=alice, source=Source.API, data={"correct": True})


def test_more_items_than_the_limit_are_refused(cancer_v1, alice, settings):
    settings.FEEDBACK_BULK_MAX = 2
    predictions = make_predictions(user=alice, count=3, name="cancer")

    with pytest.raises(services.FeedbackInvalid) as refused:
        services.feedback_give_many(
            items=[{"prediction": p.pk, "correct": True} for p in predictions], user=alice, source=Source.API
        )

    assert refused.value.errors[0]["code"] == "too_many"


def test_live_quality_over_the_last_n_reads_only_the_newest_outcomes(cancer_v1, alice):
    predictions = make_predictions(user=alice, count=5, name="cancer")
    for index, prediction in enumerate(predictions):
        give(prediction, alice, correct=index < 2)

    last = selectors.version_quality(version=cancer_v1, window="last", last_n=2)["live"]
    everything = selectors.version_quality(version=cancer_v1)["live"]

    assert everything["n"] == 5
    assert everything["accuracy"] == pytest.approx(0.4)
    assert last["n"] == 2
    assert last["coverage"] is None


def test_a_bad_window_is_refused_by_name(cancer_v1):
    from mlops_site.errors import Invalid

    with pytest.raises(Invalid) as refused:
        selectors.version_quality(version=cancer_v1, window="1y")
    assert refused.value.errors[0]["field"] == "window"
    with pytest.raises(Invalid):
        selectors.version_quality(version=cancer_v1, window="last", last_n="10001")


def test_rollups_match_a_rebuild_after_creates_changes_and_repeats(iris_v1, diabetes_v1, alice, staff):
    labels = make_predictions(user=alice, count=6, name="iris")
    numbers = make_predictions(user=alice, count=4, name="diabetes")
    for index, prediction in enumerate(labels):
        give(prediction, alice, correct=index % 2 == 0)
    give(labels[1], staff, true_label=labels[1].prediction)
    give(labels[1], staff, true_label=labels[1].prediction)
    give(labels[2], staff, true_label=other_class(iris_v1, labels[2]))
    for prediction in numbers:
        give(prediction, alice, true_value=float(prediction.prediction) + 1.5)
    give(numbers[0], staff, true_value=0.1)

    report = reconcile.quality_reconcile()

    assert report.differences == []
    assert report.rows_checked["quality"] >= 3


def test_the_reconciliation_reports_and_fixes_a_damaged_rollup(cancer_v1, alice):
    (prediction,) = make_predictions(user=alice, name="cancer")
    give(prediction, alice, correct=True)
    QualityHourly.objects.update(n=7)

    report = reconcile.quality_reconcile(fix=True)

    assert len(report.differences) == 1
    assert report.fixed
    assert reconcile.quality_reconcile().differences == []
    assert QualityHourly.objects.get().n == 1


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    steps=st.lists(
        st.tuples(st.integers(min_value=0, max_value=5), st.sampled_from(["right", "wrong", "a", "b", "c"])),
        min_size=1,
        max_size=25,
    )
)
def test_any_sequence_of_outcomes_leaves_rollups_equal_to_a_rebuild(iris_v1, alice, steps):
    predictions = list(Prediction.objects.filter(model_version=iris_v1).order_by("pk")[:6])
    if len(predictions) < 6:
        predictions = make_predictions(user=alice, count=6, name="iris")
    classes = [str(c) for c in iris_v1.classes]
    for index, choice in steps:
        data = (
            {"correct": choice == "right"}
            if choice in ("right", "wrong")
            else {"true_label": classes["abc".index(choice)]}
        )
        give(predictions[index], alice, **data)

    assert reconcile.quality_reconcile().differences == []
    live = selectors.version_quality(version=iris_v1)["live"]
    assert live["n"] == Feedback.objects.filter(model_version=iris_v1).count()
    assert live["correct"] == Feedback.objects.filter(model_version=iris_v1, correct=True).count()


def test_a_new_comment_alone_updates_the_outcome_without_a_history_row(cancer_v1, alice):
    (prediction,) = make_predictions(user=alice, name="cancer")
    give(prediction, alice, correct=True)

    stored = give(prediction, alice, correct=True, comment="seen again")

    assert (stored.status, stored.outcome_changed) == ("updated", False)
    assert Feedback.objects.get().comment == "seen again"
    assert FeedbackChange.objects.count() == 0
