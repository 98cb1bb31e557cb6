"""A user fills the predict form in chromium, sees the prediction and the probability chart, then its page."""

from __future__ import annotations

import os

import pytest

from predictions.models import Prediction

pytestmark = [
    pytest.mark.browser,
    pytest.mark.django_db(transaction=True),
]


def test_a_user_fills_the_form_and_sees_the_prediction_and_its_chart(
    logged_in_page, live_server, alice, mixed_v1
):
    page = logged_in_page(alice)

    page.goto(f"{live_server.url}/predict/")
    page.click("a.card >> text=mixed")
    page.wait_for_url(f"{live_server.url}/predict/mixed/")
    assert page.get_attribute("input[data-feature=age]", "placeholder") == "19 to 78"
    page.fill("input[data-feature=age]", "52")
    page.fill("input[data-feature=income]", "64000")
    page.select_option("select[data-feature=city]", "Rome")
    page.click("form.predict-form button[type=submit]")

    result = page.locator("#prediction-result")
    result.wait_for()
    prediction = Prediction.objects.get()
    assert page.inner_text("#predicted-value") == prediction.prediction
    assert page.inner_text("#result-version") == "mixed v1"
    # plotly drew one bar per class.
    page.locator("#probability-chart .main-svg").first.wait_for()
    assert page.locator("#probability-chart g.point").count() == 2
    assert page.input_value("input[data-feature=age]") == "52"
    if os.environ.get("PREDICTIONS_SCREENSHOT"):
        page.screenshot(path=os.environ["PREDICTIONS_SCREENSHOT"], full_page=True)

    page.click("#result-link")
    page.wait_for_url(f"{live_server.url}/predictions/{prediction.pk}/")
    assert page.inner_text("h1") == f"Prediction #{prediction.pk}"
    page.locator("#probability-chart .main-svg").first.wait_for()
    assert "Rome" in page.inner_text("table.inputs")
