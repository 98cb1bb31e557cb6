"""Tests of the collector's gauges: figures from the rollups, and a scrape's queries the same at any size."""

from __future__ import annotations

import datetime as dt
from unittest import mock

import pytest
from django.utils import timezone
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from feedback.models import QualityHourly
from models_registry.models import RegisteredModel
from monitoring import collector
from monitoring.models import WorkerHeartbeat
from predictions import services as prediction_services
from predictions.models import PredictionHourly, ShadowPrediction
from predictions.tests.helpers import make_model_version, trained_model
from training.models import RetrainingPolicy

NOW = dt.datetime(2025, 6, 1, 12, tzinfo=dt.UTC)


def gauges(**overrides: object) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector.DatabaseCollector(**overrides))  # type: ignore[arg-type]
    with mock.patch.object(timezone, "now", return_value=NOW):
        text = generate_latest(registry).decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def hours_ago(hours: float) -> dt.datetime:
    return (NOW - dt.timedelta(hours=hours)).replace(minute=0)


def label(version, *, hours: float, predicted: str, actual: str, n: int, abs_error: float = 0.0):
    QualityHourly.objects.create(
        model_version=version, hour=hours_ago(hours), predicted=predicted, actual=actual, n=n,
        sum_abs_error=abs_error, sum_sq_error=abs_error**2,
    )  # fmt: skip


@pytest.fixture
def models(db):
    cancer_v1 = make_model_version(
        trained=trained_model("cancer"), name="cancer", version=1, stage="archived"
    )
    cancer_v2 = make_model_version(trained=trained_model("cancer"), name="cancer", version=2)
    diabetes_v1 = make_model_version(trained=trained_model("diabetes"), name="diabetes", version=1)
    return cancer_v1, cancer_v2, diabetes_v1


def rows_for(models, *, hours: range) -> None:
    """Hourly rollups of every version for each hour ago in `hours`: a week is what a busy site keeps."""
    cancer_v1, cancer_v2, diabetes_v1 = models
    QualityHourly.objects.bulk_create(
        [
            QualityHourly(model_version=version, hour=hours_ago(h), predicted=p, actual=a, n=1)
            for h in hours
            for version in (cancer_v1, cancer_v2)
            for p, a in (("benign", "benign"), ("benign", "malignant"))
        ]
        + [QualityHourly(model_version=diabetes_v1, hour=hours_ago(h), n=1, sum_abs_error=2.0) for h in hours]
    )
    PredictionHourly.objects.bulk_create(
        [PredictionHourly(model_version=v, hour=hours_ago(h), n=10) for h in hours for v in models]
    )


def test_live_scores_are_accuracy_or_mae_per_window_from_the_hourly_rollups(models):
    _, cancer_v2, diabetes_v1 = models
    label(cancer_v2, hours=1, predicted="benign", actual="benign", n=3)
    label(cancer_v2, hours=2, predicted="benign", actual="malignant", n=1)
    label(cancer_v2, hours=48, predicted="malignant", actual="malignant", n=4)
    label(cancer_v2, hours=24 * 8, predicted="benign", actual="malignant", n=100)  # outside both windows
    label(diabetes_v1, hours=3, predicted="", actual="", n=4, abs_error=10.0)

    found = gauges()

    def score(model: str, version: str, metric: str, window: str) -> float | None:
        labels = (("metric", metric), ("model", model), ("version", version), ("window", window))
        return found.get(("mlops_model_live_score", labels))

    assert score("cancer", "2", "accuracy", "24h") == 0.75
    assert score("cancer", "2", "accuracy", "7d") == 7 / 8
    assert score("diabetes", "1", "mae", "24h") == 2.5
    assert score("cancer", "1", "accuracy", "7d") is None


def test_coverage_threshold_production_version_and_heartbeats(models):
    _, cancer_v2, _ = models
    PredictionHourly.objects.create(model_version=cancer_v2, hour=hours_ago(1), n=8)
    PredictionHourly.objects.create(model_version=cancer_v2, hour=hours_ago(30), n=12)
    PredictionHourly.objects.create(model_version=cancer_v2, hour=hours_ago(24 * 9), n=1000)
    label(cancer_v2, hours=1, predicted="benign", actual="benign", n=5)
    RetrainingPolicy.objects.create(
        registered_model=cancer_v2.registered_model, enabled=True, metric="accuracy", threshold=0.8
    )
    RetrainingPolicy.objects.create(
        registered_model=models[2].registered_model, enabled=False, metric="mae", threshold=40.0
    )
    WorkerHeartbeat.objects.create(hostname="celery@a", last_seen=NOW - dt.timedelta(seconds=30))

    found = gauges()

    assert found[("mlops_model_feedback_coverage", (("model", "cancer"), ("version", "2")))] == 0.25
    assert found[("mlops_model_score_threshold", (("metric", "accuracy"), ("model", "cancer")))] == 0.8
    assert ("mlops_model_score_threshold", (("metric", "mae"), ("model", "diabetes"))) not in found
    assert found[("mlops_model_production_version", (("model", "cancer"),))] == 2
    assert found[("mlops_model_production_version", (("model", "diabetes"),))] == 1
    assert (
        found[("mlops_worker_heartbeat_timestamp_seconds", (("hostname", "celery@a"),))]
        == NOW.timestamp() - 30
    )


def test_a_scrape_costs_the_same_queries_however_many_rollup_rows(models, django_assert_num_queries):
    rows_for(models, hours=range(2))
    with django_assert_num_queries(8) as small:
        gauges()

    rows_for(models, hours=range(2, 24 * 10))
    QualityHourly.objects.update(n=2)

    with django_assert_num_queries(len(small.captured_queries)):
        found = gauges()
    assert found[("mlops_model_feedback_coverage", (("model", "cancer"), ("version", "2")))] > 0


def test_a_failing_source_leaves_the_other_gauges(models):
    def broken(now):
        raise RuntimeError("boom")
        yield  # pragma: no cover

    found = gauges(sources=[broken, collector.production_versions])

    assert found[("mlops_model_production_version", (("model", "cancer"),))] == 2


def test_queue_lengths_are_left_out_when_the_broker_is_not_redis(models):
    with mock.patch("mlops_site.celery.queue_lengths", return_value=None):
        assert not any(name == "mlops_queue_length" for name, _ in gauges())
    with mock.patch("mlops_site.celery.queue_lengths", return_value={"celery": 7}):
        assert gauges()[("mlops_queue_length", (("queue", "celery"),))] == 7


def test_the_shadow_disagreement_is_the_share_of_a_challengers_newest_answers_of_another_class(models, alice):
    _, champion, _ = models
    challenger = make_model_version(
        trained=trained_model("cancer"), name="cancer", version=3, stage="staging"
    )
    RegisteredModel.objects.filter(pk=champion.registered_model_id).update(challenger_mode="shadow")
    made = prediction_services.prediction_make(
        registered_model_name="cancer",
        rows=trained_model("cancer").sample_rows[:1] * 8,
        user=alice,
        channel="api",
    ).predictions
    for index, prediction in enumerate(made):
        served = str(prediction.prediction)
        other = "benign" if served == "malignant" else "malignant"
        ShadowPrediction.objects.create(
            prediction=prediction,
            model_version=challenger,
            champion=champion,
            prediction_value=other if index < 2 else served,
            prediction_created_at=prediction.created_at,
        )

    found = gauges()

    assert found[("mlops_shadow_disagreement_ratio", (("model", "cancer"), ("version", "3")))] == 2 / 8
