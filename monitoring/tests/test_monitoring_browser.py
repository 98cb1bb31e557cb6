"""A user opens the monitoring overview and a model's page in chromium and sees the plotly charts drawn."""

from __future__ import annotations

import pytest

from monitoring.tests.test_monitoring_pages import rollups_for
from predictions.tests.helpers import make_model_version, trained_model
from training.models import RetrainingPolicy

pytestmark = [
    pytest.mark.browser,
    pytest.mark.django_db(transaction=True),
]


def test_a_user_sees_the_sparklines_and_the_model_charts_drawn(logged_in_page, live_server, alice):
    version = make_model_version(trained=trained_model("cancer"), name="cancer", version=1)
    RetrainingPolicy.objects.create(
        registered_model=version.registered_model, metric="accuracy", threshold=0.8
    )
    rollups_for(version, hours=range(0, 48, 2), latency_bins={20: 8, 35: 2})
    page = logged_in_page(alice)

    page.goto(f"{live_server.url}/monitoring/")
    spark = page.locator("tr[data-model=cancer] .spark")
    spark.locator(".main-svg").first.wait_for()
    assert spark.get_attribute("data-rendered") == "true"
    assert page.locator("tr[data-model=cancer] .spark path.js-line").count() == 1

    page.click("tr[data-model=cancer] >> text=cancer")
    page.wait_for_url(f"{live_server.url}/monitoring/cancer/")
    for chart in ("volume", "score", "coverage", "delay", "latency"):
        page.locator(f"#{chart}-chart .main-svg").first.wait_for()
    # Bars of volume, a line per version plus the dashed threshold line.
    assert page.locator("#volume-chart g.point").count() > 0
    assert page.locator("#score-chart path.js-line").count() >= 2
    assert "Threshold" in page.inner_text("#score-chart")
    # p50, p95 and p99 of the one version, on a log axis.
    assert page.locator("#latency-chart .scatterlayer .trace").count() == 3
