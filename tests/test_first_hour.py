"""The first hour in chromium, on a site as `make run` leaves it (an admin, the demo datasets and the
demo model in production): an ordinary user predicts with the demo model, says it was right and finds the
outcome on the history page; the admin trains a second version, compares, promotes and rolls back, each
production change through its confirmation page; the navigation reaches "Log out" at desktop and phone
width (screenshots in the test's folder)."""

from __future__ import annotations

import pytest
from django.core.management import call_command
from playwright.sync_api import expect

from feedback.models import Feedback
from models_registry.models import ModelVersion
from predictions.models import Prediction
from training import demo_services
from training.models import TrainingRun
from training.tasks import training_run_execute_task

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

DEMO = demo_services.DEMO_MODEL_NAME


def _fresh_site(admin) -> None:
    """What `make run` does on a first start, the worker's part run here."""
    call_command("load_demo_datasets", verbosity=0)
    run = demo_services.demo_model_start()
    training_run_execute_task.apply(args=[run.pk])


def _navigation_reaches_log_out(page, tmp_path, name: str) -> None:
    for width, height in ((1280, 800), (390, 844)):
        page.set_viewport_size({"width": width, "height": height})
        page.reload()
        if page.locator(".menu-button").is_visible():
            page.click(".menu-button")
        log_out = page.get_by_role("button", name="Log out")
        expect(log_out).to_be_visible()
        box = log_out.bounding_box()
        assert box is not None
        assert box["x"] >= 0
        assert box["x"] + box["width"] <= width, (name, width, box)
        # A page's heading and its buttons stay on screen, the heading on its own line rather than squeezed.
        for element in page.locator(".page-head h1, .page-head .button").all():
            box = element.bounding_box()
            assert box is not None
            assert box["x"] >= 0, (name, width, box)
            assert box["x"] + box["width"] <= width, (name, width, box)
        if page.locator(".page-head h1").count():
            heading = page.locator(".page-head h1").bounding_box()
            assert heading is not None
            assert heading["height"] < 2 * 40, (name, width, heading)
        page.screenshot(path=str(tmp_path / f"{name}-{width}.png"))
    page.set_viewport_size({"width": 1280, "height": 900})


def test_a_new_user_predicts_with_the_demo_and_an_admin_promotes_and_rolls_back(
    logged_in_page, live_server, browser, admin_user, alice, tmp_path
):
    _fresh_site(admin_user)

    # An ordinary user: home, the demo model, a prediction, "Right", the history.
    page = logged_in_page(alice)
    page.click(f"#predict-with a.card[data-model={DEMO}]")
    page.wait_for_url(f"{live_server.url}/predict/{DEMO}/")
    # Thirty features: the form fills itself with a row set aside from the demo's training data.
    page.click("#fill-example")
    expect(page.locator("input[data-feature='mean radius']")).not_to_have_value("")
    page.click("form.predict-form button[type=submit]")
    expect(page.locator("#prediction-result")).to_be_visible()
    prediction = Prediction.objects.get()
    page.click("#feedback button[data-verdict=right]")
    expect(page.locator("#feedback [data-outcome]")).to_contain_text("Right")
    assert Feedback.objects.get(prediction=prediction).correct is True
    page.goto(f"{live_server.url}/predictions/")
    expect(page.locator(f"a[href='/predictions/{prediction.pk}/']")).to_be_visible()
    expect(page.locator("table.predictions")).to_contain_text("Right")
    _navigation_reaches_log_out(page, tmp_path, "user")
    page.context.close()

    # The admin: a second version, compared, promoted, rolled back; each change confirmed first.
    admin = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
    admin.set_default_timeout(15_000)
    from tests.factories import PASSWORD

    admin.goto(f"{live_server.url}/accounts/login/")
    admin.fill("#id_username", admin_user.username)
    admin.fill("#id_password", PASSWORD)
    admin.click("button[type=submit]")
    admin.wait_for_url(f"{live_server.url}/")
    admin.goto(f"{live_server.url}/models/{DEMO}/")
    admin.click("a[data-train]")
    admin.select_option("#id_algorithm", "infer:random_forest")
    admin.fill("#id_params", '{"n_estimators": 10, "max_depth": 4}')
    admin.click("#new-run button[type=submit]")
    admin.wait_for_url(f"{live_server.url}/training/*/")
    second = TrainingRun.objects.exclude(algorithm=demo_services.DEMO_ALGORITHM).get()
    training_run_execute_task.apply(args=[second.pk])
    expect(admin.locator("#results")).to_contain_text(f"Registered as {DEMO} v2", timeout=20_000)

    admin.goto(f"{live_server.url}/models/{DEMO}/")
    expect(admin.locator("body")).to_contain_text("v2")
    admin.click("button[data-action=production][data-version='2']")
    expect(admin.locator("h1")).to_contain_text("v2")  # the confirmation page, nothing changed yet
    assert ModelVersion.objects.get(version=2).stage != "production"
    admin.click("button[data-confirm]")
    admin.wait_for_url(f"{live_server.url}/models/{DEMO}/")
    assert ModelVersion.objects.get(version=2).stage == "production"

    admin.click("button[data-rollback]")
    assert ModelVersion.objects.get(version=2).stage == "production"  # only the confirmation so far
    admin.click("button[data-confirm]")
    admin.wait_for_url(f"{live_server.url}/models/{DEMO}/")
    assert ModelVersion.objects.get(version=1).stage == "production"
    _navigation_reaches_log_out(admin, tmp_path, "admin")
