"""Tests of the monitoring pages: the overview of every model and one model's panels, read from rollups in
a fixed number of queries, for staff and plain users alike (as /models/ is)."""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from feedback.models import DelayHourly, QualityHourly
from mlops_site import latency_bins as latency
from mlops_site import rollups
from models_registry.models import RegisteredModel
from monitoring import drift_services
from monitoring.models import DriftReport
from monitoring.tests.drift_helpers import drift_version, traffic_store
from predictions.models import LatencyHourly, PredictionHourly
from predictions.tests.helpers import make_model_version, trained_model
from training.models import Retraining, RetrainingPolicy


def client_for(user):
    client = Client()
    client.force_login(user)
    return client


def hours_ago(hours: int) -> dt.datetime:
    return rollups.hour_of(timezone.now()) - dt.timedelta(hours=hours)


def figure(response, element_id):
    html = response.content.decode()
    return json.loads(html.split(f'id="{element_id}" type="application/json">')[1].split("</script>")[0])


def rollups_for(version, *, hours, right=3, wrong=1, made=10, latency_bins=None):
    """Hourly rollups of `version`: predictions, outcomes (right and wrong) and their delays."""
    classes = [str(c) for c in version.classes or []]
    PredictionHourly.objects.bulk_create(
        [PredictionHourly(model_version=version, hour=hours_ago(h), n=made) for h in hours]
    )
    cells = []
    for h in hours:
        if version.task == "regression":
            n = right + wrong
            cells.append(
                QualityHourly(
                    model_version=version,
                    hour=hours_ago(h),
                    n=n,
                    sum_abs_error=40.0 * n,
                    sum_sq_error=1600.0 * n,
                )
            )
            continue
        cells.append(
            QualityHourly(
                model_version=version, hour=hours_ago(h), predicted=classes[0], actual=classes[0], n=right
            )
        )
        cells.append(
            QualityHourly(
                model_version=version, hour=hours_ago(h), predicted=classes[0], actual=classes[1], n=wrong
            )
        )
    QualityHourly.objects.bulk_create(cells)
    DelayHourly.objects.bulk_create(
        [DelayHourly(model_version=version, hour=hours_ago(h), bin=6, n=right + wrong) for h in hours]
    )
    if latency_bins:
        LatencyHourly.objects.bulk_create(
            [
                LatencyHourly(model_version=version, hour=hours_ago(h), bin=index, n=n)
                for h in hours
                for index, n in latency_bins.items()
            ]
        )


@pytest.fixture
def cancer(db):
    """cancer: v1 archived, v2 in production, v3 the challenger in staging; a policy at accuracy 0.8."""
    trained = trained_model("cancer")
    v1 = make_model_version(trained=trained, name="cancer", version=1, stage="archived")
    v2 = make_model_version(trained=trained, name="cancer", version=2)
    v3 = make_model_version(trained=trained, name="cancer", version=3, stage="staging")
    RetrainingPolicy.objects.create(
        registered_model=v2.registered_model, enabled=True, metric="accuracy", threshold=0.8
    )
    rollups_for(v2, hours=range(0, 48, 3))
    rollups_for(v1, hours=range(200, 240, 5), right=9, wrong=1)
    Retraining.objects.create(
        registered_model=v2.registered_model, trigger=Retraining.Trigger.SCHEDULE, champion=v1, challenger=v2,
        status=Retraining.Status.SUCCEEDED, step=Retraining.Step.DONE, decision=Retraining.Decision.PROMOTED,
    )  # fmt: skip
    return v1, v2, v3


def more_models(count):
    """`count` more models, each with a production version, rollups and a retraining."""
    for index in range(count):
        version = make_model_version(trained=trained_model("diabetes"), name=f"regressor-{index}", version=1)
        rollups_for(version, hours=range(0, 100, 7))
        RetrainingPolicy.objects.create(
            registered_model=version.registered_model, metric="mae", threshold=50.0
        )
        Retraining.objects.create(
            registered_model=version.registered_model, trigger=Retraining.Trigger.MANUAL, champion=version,
            status=Retraining.Status.FAILED,
        )  # fmt: skip


def test_the_overview_lists_every_model_with_its_live_score_against_the_threshold(staff, cancer):
    more_models(1)
    RegisteredModel.objects.create(name="no-versions-yet", task="classification")

    response = client_for(staff).get("/monitoring/")

    assert response.status_code == 200
    rows = {item["row"].model.name: item["row"] for item in response.context["items"]}
    assert list(rows) == ["cancer", "regressor-0"]
    cancer_row = rows["cancer"]
    assert cancer_row.production.version == 2
    # The last 7 days of v2: 16 hours of 3 right and 1 wrong.
    assert cancer_row.score.metric == "accuracy"
    assert cancer_row.score.value == pytest.approx(0.75)
    assert cancer_row.score.n == 64
    assert cancer_row.score.threshold == 0.8
    assert cancer_row.score.breached is True
    assert cancer_row.coverage == pytest.approx(64 / 160)
    assert cancer_row.volume == 160
    assert cancer_row.last_retraining.decision == "promoted"
    regressor = rows["regressor-0"]
    assert regressor.score.metric == "mae"
    assert regressor.score.value == pytest.approx(40.0)
    assert regressor.score.breached is False
    assert regressor.last_retraining.status == "failed"
    spark = figure(response, f"spark-{cancer_row.model.pk}")
    assert len(spark["data"][0]["y"]) == 7 * 24
    assert sum(spark["data"][0]["y"]) == 160
    html = response.content.decode()
    assert "below threshold" in html
    assert "not measured yet" in html  # the drift slot
    assert "not estimated yet" in html  # the estimate slot


def test_the_overview_window_changes_the_live_score_and_an_unknown_one_is_a_400(alice, cancer):
    client = client_for(alice)

    everything = client.get("/monitoring/", {"window": "all"})
    unknown = client.get("/monitoring/", {"window": "fortnight"})

    (item,) = everything.context["items"]
    assert item["row"].score.n == 64  # v1's outcomes are an archived version's: not the production score
    assert unknown.status_code == 400
    assert "window" in unknown.content.decode()


def test_plain_users_see_the_monitoring_pages_as_they_see_the_models_page(alice, cancer):
    client = client_for(alice)

    assert client.get("/models/").status_code == 200
    assert client.get("/monitoring/").status_code == 200
    assert client.get("/monitoring/cancer/").status_code == 200


def test_anonymous_visitors_are_sent_to_log_in(cancer):
    for path in ("/monitoring/", "/monitoring/cancer/"):
        response = Client().get(path)
        assert response.status_code == 302
        assert "/accounts/login/" in response["Location"]


def test_the_navigation_links_the_overview_and_the_model_page_links_its_monitoring(alice, cancer):
    client = client_for(alice)

    assert 'href="/monitoring/"' in client.get("/models/").content.decode()
    assert 'href="/monitoring/cancer/"' in client.get("/models/cancer/").content.decode()


def queries_of(client, path):
    client.get(path)  # sessions and caches warm
    with CaptureQueriesContext(connection) as captured:
        assert client.get(path).status_code == 200
    return len(captured.captured_queries)


def test_the_overview_runs_the_same_queries_for_one_model_or_many(staff, cancer, django_assert_num_queries):
    client = client_for(staff)
    one = queries_of(client, "/monitoring/")
    more_models(4)
    for version in cancer:
        rollups_for(version, hours=range(241, 400, 2))

    # Session, user, models (with the latest retraining's id), production versions, policies,
    # retrainings, live quality (3 grouped reads), the volume, and drift status with the estimate: 11.
    with django_assert_num_queries(11):
        response = client.get("/monitoring/")

    assert one == 11
    assert len(response.context["items"]) == 5


def test_the_model_page_draws_volume_score_coverage_and_delay_from_the_rollups(staff, cancer):
    response = client_for(staff).get("/monitoring/cancer/", {"period": "7d"})

    assert response.status_code == 200
    m = response.context["m"]
    # v1 (archived) and v3 (staging) have nothing in the last 7 days: no lines for them.
    assert [s.version.version for s in m.series] == [2]
    (v2,) = m.series
    assert sum(v2.predicted) == 160
    assert sum(v2.labelled) == 64
    assert v2.score.value == pytest.approx(0.75)
    volume = figure(response, "volume-figure")
    assert sum(sum(trace["y"]) for trace in volume["data"]) == 160
    score = figure(response, "score-figure")
    threshold = [t for t in score["data"] if t["name"].startswith("Threshold")]
    assert threshold[0]["y"] == [0.8, 0.8]
    assert [y for y in score["data"][0]["y"] if y is not None] == [pytest.approx(0.75)] * 16
    coverage = figure(response, "coverage-figure")
    assert [c for c in coverage["data"][0]["y"] if c is not None][:1] == [pytest.approx(0.4)]
    delay = figure(response, "delay-figure")
    assert sum(delay["data"][0]["y"]) == 64
    html = response.content.decode()
    assert "No page or API requests in this period" in html
    assert "Drift is not measured yet" in html  # the drift slot


def test_the_model_page_shows_latency_percentiles_per_version_and_bucket(staff, cancer):
    _v1, v2, v3 = cancer
    # v2: 90 fast requests and 10 slow ones in each of two hours; v3: 50 in one hour.
    fast, slow = latency.latency_bin(4.0), latency.latency_bin(400.0)
    LatencyHourly.objects.bulk_create(
        [
            LatencyHourly(model_version=v2, hour=hours_ago(h), bin=index, n=n)
            for h in (0, 5)
            for index, n in ((fast, 90), (slow, 10))
        ]
        + [LatencyHourly(model_version=v3, hour=hours_ago(1), bin=latency.latency_bin(20.0), n=50)]
    )

    response = client_for(staff).get("/monitoring/cancer/", {"period": "24h"})

    m = response.context["m"]
    by_version = {s.version.version: s.latency for s in m.series}
    assert by_version[2].requests == 200
    assert by_version[2].overall[50] == pytest.approx(4.0, rel=0.15)
    assert by_version[2].overall[95] == pytest.approx(400.0, rel=0.15)
    assert by_version[3].requests == 50
    assert by_version[3].overall[99] == pytest.approx(20.0, rel=0.15)
    chart = figure(response, "latency-figure")
    assert chart["layout"]["yaxis"]["type"] == "log"
    p50 = next(t for t in chart["data"] if t["name"] == "v2 p50")
    assert sum(y is not None for y in p50["y"]) == 2  # two hours had requests
    html = response.content.decode()
    assert "200" in html.split('id="latency-panel"')[1].split("</table>")[0]


@pytest.mark.parametrize("period", ["24h", "7d", "30d", "90d"])
def test_every_period_of_the_model_page_renders(alice, cancer, period):
    response = client_for(alice).get("/monitoring/cancer/", {"period": period})

    assert response.status_code == 200
    assert len(response.context["m"].buckets) == {"24h": 24, "7d": 168, "30d": 30, "90d": 90}[period]


def test_the_model_page_runs_the_same_queries_with_more_rows_and_versions(staff, cancer):
    client = client_for(staff)
    before = queries_of(client, "/monitoring/cancer/")
    v4 = make_model_version(trained=trained_model("cancer"), name="cancer", version=4, stage="archived")
    for version in (*cancer, v4):
        rollups_for(version, hours=range(241, 900, 3), latency_bins={20: 5, 40: 1})

    after = queries_of(client, "/monitoring/cancer/")

    assert after == before


def test_an_unknown_model_is_a_404_and_an_unknown_period_a_400(alice, cancer):
    client = client_for(alice)

    assert client.get("/monitoring/nope/").status_code == 404
    response = client.get("/monitoring/cancer/", {"period": "1y"})
    assert response.status_code == 400
    assert "period" in response.content.decode()


def test_a_model_without_versions_or_rollups_shows_empty_panels(alice, db):
    from models_registry.models import RegisteredModel

    RegisteredModel.objects.create(name="fresh", task="classification")
    client = client_for(alice)

    overview = client.get("/monitoring/")
    page = client.get("/monitoring/fresh/")

    assert overview.status_code == 200
    assert page.status_code == 200
    assert "No predictions in this period" in json.dumps(figure(page, "volume-figure"))


def test_the_overview_shows_each_production_versions_latest_drift_status_and_estimate(staff, cancer):
    production = next(v for v in cancer if v.stage == "production")
    end = timezone.now().replace(minute=0, second=0, microsecond=0)
    for hours_back, drifting, estimate in ((2, False, 0.95), (1, True, 0.83)):
        DriftReport.objects.create(
            model_version=production,
            window_end=end - dt.timedelta(hours=hours_back),
            window_hours=24,
            computed_at=end,
            rows=500,
            features_tested=10,
            features_drifted=6 if drifting else 0,
            share_drifted=0.6 if drifting else 0.0,
            drifting=drifting,
            estimated_metric="accuracy",
            estimated_score=estimate,
            estimated_stderr=0.01,
            estimated_rows=500,
        )

    response = client_for(staff).get("/monitoring/")

    row = next(item["row"] for item in response.context["items"] if item["row"].model.name == "cancer")
    assert (row.drift["drifting"], row.drift["share"]) == (True, 0.6)
    assert row.estimated["value"] == 0.83
    assert "drifting" in response.content.decode()


def test_the_model_page_lists_each_features_test_and_draws_a_chosen_features_distributions(staff):
    version = drift_version(name="moved")
    now = timezone.now()
    window_end = now.replace(minute=0, second=0, microsecond=0)
    hours = [window_end - dt.timedelta(hours=h) for h in range(1, 25)]
    traffic_store(version, n=2400, hours=hours, rng=np.random.default_rng(5), shift=1.0)
    drift_services.drift_reports_compute(now=now)
    client = client_for(staff)

    response = client.get("/monitoring/moved/")

    drift = response.context["drift"]
    assert next(f["feature"] for f in drift.features) in {"x", "c"}  # the most drifted first
    assert drift.feature == drift.features[0]["feature"]
    chart = figure(response, "distribution-figure")
    names = [trace["name"] for trace in chart["data"]]
    assert names[0].startswith("training")
    assert names[1].startswith("recent (2,400 rows)")
    assert sum(chart["data"][1]["y"]) == pytest.approx(1.0)

    chosen = client.get("/monitoring/moved/", {"feature": "z"})
    assert chosen.context["drift"].feature == "z"
    assert client.get("/monitoring/moved/", {"feature": "nope"}).status_code == 400
