"""Tests of the paired comparison of champion and challenger: the rows both scored that have an outcome,
McNemar's and Wilcoxon's tests on known data, the daily series, and where the page and the API show it."""

from __future__ import annotations

import datetime as dt

import pytest
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient
from scipy import stats

from feedback import checks as feedback_checks
from feedback import selectors as feedback_selectors
from feedback import services as feedback_services
from feedback.quality import wilson_interval
from models_registry import charts, selectors
from models_registry.models import ModelVersion, RegisteredModel
from predictions import services
from predictions.models import Prediction, ShadowPrediction
from predictions.tests.helpers import make_model_version, trained_model
from training import policy_services
from training.models import RetrainingPolicy

CANCER = trained_model("cancer")


@pytest.fixture(autouse=True)
def _fresh_feedback_versions():
    # Rolled-back tests reuse version ids, which feedback's process cache of versions would take for old ones.
    feedback_checks._version_infos.clear()
    yield
    feedback_checks._version_infos.clear()


def versions_of(name: str, trained, challenger) -> tuple[ModelVersion, ModelVersion]:
    champion = make_model_version(trained=trained, name=name, version=1)
    return champion, make_model_version(trained=challenger, name=name, version=2, stage="staging")


@pytest.fixture
def cancer(db) -> tuple[ModelVersion, ModelVersion]:
    return versions_of("cancer", CANCER, trained_model("cancer", algorithm="logistic_regression"))


def predicted(user, name: str, count: int) -> list[Prediction]:
    rows = (trained_model(name).sample_rows * count)[:count]
    return services.prediction_make(
        registered_model_name=name, rows=rows, user=user, channel="api"
    ).predictions


def shadow_of(prediction: Prediction, challenger: ModelVersion, value, *, made_at=None) -> ShadowPrediction:
    return ShadowPrediction.objects.create(
        prediction=prediction,
        model_version=challenger,
        champion_id=prediction.model_version_id,
        prediction_value=value,
        prediction_created_at=made_at or prediction.created_at,
    )


def outcome(prediction: Prediction, user, **data) -> None:
    feedback_services.feedback_give(prediction_id=prediction.pk, user=user, source="api", data=data)


def other(label: str) -> str:
    return "benign" if label == "malignant" else "malignant"


#: (champion right, challenger right) and how many rows of each: 2 rows only the champion got right, 10
#: only the challenger.
PATTERN = [(True, True)] * 15 + [(True, False)] * 2 + [(False, True)] * 10 + [(False, False)] * 3


def classification_rows(user, champion, challenger) -> list[Prediction]:
    """The PATTERN's rows: each with the challenger's shadow and an outcome that makes each right or not."""
    rows = predicted(user, "cancer", len(PATTERN))
    for prediction, (champion_right, challenger_right) in zip(rows, PATTERN, strict=True):
        label = str(prediction.prediction)
        true = label if champion_right else other(label)
        shadow_of(prediction, challenger, true if challenger_right else other(true))
        outcome(prediction, user, true_label=true)
    return rows


def compare(champion, challenger, **options):
    return selectors.challenger_comparison(
        registered_model=champion.registered_model, champion=champion, challenger=challenger, **options
    )


def test_classification_is_mcnemar_on_the_shared_rows(alice, cancer):
    champion, challenger = cancer
    classification_rows(alice, champion, challenger)

    result = compare(champion, challenger)

    paired = result.paired
    assert (paired.test, paired.n, paired.champion_only, paired.challenger_only) == ("mcnemar", 30, 2, 10)
    assert paired.champion_score == pytest.approx(17 / 30)
    assert paired.challenger_score == pytest.approx(25 / 30)
    # The exact test below 50 discordant rows: twice the binomial tail of the smaller count.
    assert paired.p_value == pytest.approx(2 * stats.binom.cdf(2, 12, 0.5))
    assert paired.p_value == pytest.approx(158 / 4096)
    assert result.significant
    assert result.sentence.startswith("The difference is significant (p = 0.0386, McNemar, 30 shared rows)")
    assert paired.beats(margin=0.2, alpha=0.05)


def test_rows_without_an_outcome_without_a_shadow_or_of_another_challenger_are_left_out(alice, cancer):
    champion, challenger = cancer
    classification_rows(alice, champion, challenger)
    no_outcome, no_shadow, other_challenger = predicted(alice, "cancer", 3)
    shadow_of(no_outcome, challenger, "benign")
    outcome(no_shadow, alice, true_label="benign")
    third = make_model_version(trained=CANCER, name="cancer", version=3, stage="staging")
    shadow_of(other_challenger, third, "benign")
    outcome(other_challenger, alice, true_label="benign")

    assert compare(champion, challenger).paired.n == 30
    assert compare(champion, third).paired.n == 1


def test_an_outcome_wrong_without_the_true_class_is_not_paired(alice, db):
    champion, challenger = versions_of("iris", trained_model("iris"), trained_model("iris", seed=1))
    first, second = predicted(alice, "iris", 2)
    shadow_of(first, challenger, first.prediction)
    shadow_of(second, challenger, second.prediction)
    outcome(first, alice, correct=False)
    outcome(second, alice, correct=True)

    result = compare(champion, challenger)

    assert (result.paired.n, result.excluded_unknown_class) == (1, 1)
    assert (result.paired.champion_score, result.paired.challenger_score) == (1.0, 1.0)


def test_regression_is_wilcoxon_on_the_absolute_errors(alice, db):
    champion, challenger = versions_of(
        "diabetes", trained_model("diabetes"), trained_model("diabetes", algorithm="ridge")
    )
    champion_errors = [10.0, -12.0, 8.0, 15.0, -9.0, 11.0, 14.0, 13.0, 7.5, -6.0]
    challenger_errors = [5.0, 6.0, -4.0, 7.0, 8.0, -3.0, 9.0, 6.0, 8.5, 2.0]
    for prediction, mine, theirs in zip(
        predicted(alice, "diabetes", 10), champion_errors, challenger_errors, strict=True
    ):
        true = prediction.prediction - mine
        shadow_of(prediction, challenger, true + theirs)
        outcome(prediction, alice, true_value=true)

    paired = compare(champion, challenger).paired

    champion_abs = [abs(e) for e in champion_errors]
    challenger_abs = [abs(e) for e in challenger_errors]
    assert (paired.test, paired.n, paired.higher_is_better) == ("wilcoxon", 10, False)
    assert paired.champion_score == pytest.approx(sum(champion_abs) / 10)
    assert paired.challenger_score == pytest.approx(sum(challenger_abs) / 10)
    expected = stats.wilcoxon(
        [b - a for a, b in zip(champion_abs, challenger_abs, strict=True)], zero_method="zsplit"
    ).pvalue
    assert paired.p_value == pytest.approx(expected)
    assert paired.p_value < 0.05
    assert paired.improvement == pytest.approx(paired.champion_score - paired.challenger_score)
    assert (paired.champion_only, paired.challenger_only) == (1, 9)


def test_the_daily_series_counts_each_day_with_wilson_intervals(alice, cancer):
    champion, challenger = cancer
    rows = predicted(alice, "cancer", 5)
    yesterday = timezone.now() - dt.timedelta(days=1)
    for index, prediction in enumerate(rows):
        label = str(prediction.prediction)
        made_at = yesterday if index < 2 else None
        shadow_of(prediction, challenger, label if index != 4 else other(label), made_at=made_at)
        outcome(prediction, alice, true_label=label)

    days = compare(champion, challenger).days

    today = timezone.localtime(timezone.now()).date()
    assert [(d["day"], d["n"]) for d in days] == [
        ((today - dt.timedelta(days=1)).isoformat(), 2),
        (today.isoformat(), 3),
    ]
    assert (days[1]["champion"], days[1]["challenger"]) == (1.0, pytest.approx(2 / 3))
    assert (days[1]["challenger_low"], days[1]["challenger_high"]) == pytest.approx(wilson_interval(2, 3))
    assert (days[0]["champion_low"], days[0]["champion_high"]) == pytest.approx(wilson_interval(2, 2))


def test_since_and_last_n_bound_the_rows_read(alice, cancer):
    champion, challenger = cancer
    rows = classification_rows(alice, champion, challenger)
    cut = rows[10].created_at
    ShadowPrediction.objects.filter(prediction__in=rows[:10]).update(
        prediction_created_at=cut - dt.timedelta(hours=1)
    )

    assert compare(champion, challenger, since=cut).paired.n == 20
    newest = compare(champion, challenger, last_n=5).paired
    assert newest.n == 5
    # The newest five rows of the pattern are the last ones: three both wrong, two only the challenger right.
    assert (newest.champion_only, newest.challenger_only) == (0, 2)


def test_without_shared_rows_there_is_nothing_to_test(cancer):
    champion, challenger = cancer

    result = compare(champion, challenger)

    assert (result.paired.n, result.paired.p_value, result.days) == (0, None, [])
    assert not result.significant
    assert result.sentence == "No shared rows with an outcome yet."


def test_the_chart_has_both_scores_with_their_intervals_and_the_counts(alice, cancer):
    champion, challenger = cancer
    classification_rows(alice, champion, challenger)
    days = compare(champion, challenger).days

    figure = charts.challenger_comparison_figure(
        days=days, task="classification", champion_label="v1", challenger_label="v2"
    )

    bars, first, second = figure["data"]
    assert (bars["type"], list(bars["y"])) == ("bar", [30])
    assert [first["name"], second["name"]] == ["v1", "v2"]
    assert first["error_y"]["array"][0] == pytest.approx(days[0]["champion_high"] - days[0]["champion"])
    assert second["error_y"]["arrayminus"][0] == pytest.approx(
        days[0]["challenger"] - days[0]["challenger_low"]
    )


def test_the_page_and_the_api_say_whether_the_difference_is_significant(client, alice, cancer):
    champion, challenger = cancer
    classification_rows(alice, champion, challenger)
    client.force_login(alice)

    page = client.get(reverse("registry:model-detail", args=["cancer"])).content.decode()
    api = APIClient()
    api.force_authenticate(alice)
    body = api.get("/api/models/cancer/challenger/").json()

    assert "The difference is significant (p = 0.0386" in page
    assert 'id="challenger-chart"' in page
    assert 'id="challenger-figure"' in page
    comparison = body["comparison"]
    assert (comparison["test"], comparison["n"], comparison["significant"]) == ("mcnemar", 30, True)
    assert comparison["p_value"] == pytest.approx(158 / 4096)
    assert [(d["n"], d["champion"]) for d in comparison["days"]] == [(30, pytest.approx(17 / 30))]
    assert body["live"]["champion"]["n"] == 30
    assert RegisteredModel.objects.get(name="cancer").challenger_mode == "off"


def test_the_model_page_reads_the_comparison_in_one_query(
    client, alice, cancer, django_assert_max_num_queries
):
    champion, challenger = cancer
    classification_rows(alice, champion, challenger)
    client.force_login(alice)

    # The comparison is one of them; three read the retraining panel.
    with django_assert_max_num_queries(14):
        assert client.get(reverse("registry:model-detail", args=["cancer"])).status_code == 200


def test_a_versions_newest_answers_count_those_it_gave_in_shadow(alice, cancer):
    champion, challenger = cancer
    classification_rows(alice, champion, challenger)

    answers = feedback_selectors.version_answers_quality(version=challenger, last_n=20)
    served_only = feedback_selectors.version_quality(version=challenger, window="last", last_n=20)["live"]

    # The newest 20 of PATTERN's rows, as the challenger scored them in shadow.
    newest = list(reversed(PATTERN))[:20]
    assert answers["n"] == 20
    assert answers["accuracy"] == pytest.approx(sum(right for _, right in newest) / 20)
    assert served_only["n"] == 0


def test_the_policys_last_n_reading_of_a_champion_fresh_from_shadow_counts_its_shadow_answers(alice, cancer):
    champion, challenger = cancer
    classification_rows(alice, champion, challenger)
    policy = RetrainingPolicy(
        registered_model=champion.registered_model, metric="accuracy", window="last", last_n=100
    )

    reading = policy_services.live_reading(policy=policy, version=challenger)

    assert (reading.n, reading.value) == (30, pytest.approx(25 / 30))
