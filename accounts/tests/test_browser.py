"""The login form and the token page in a real browser, then the new token used by a program."""

from __future__ import annotations

import json
import urllib.request

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_a_user_logs_in_creates_a_token_and_a_program_uses_it(logged_in_page, live_server, alice):
    page = logged_in_page(alice)

    page.click("text=API token")
    page.wait_for_url(f"{live_server.url}/accounts/token/")
    assert page.locator("text=You have no API token").is_visible()
    page.click("button:has-text('Create token')")
    key = page.input_value("#new-token")

    assert len(key) == 40
    url = f"{live_server.url}/api/me/"
    request = urllib.request.Request(url, headers={"Authorization": f"Token {key}"})  # noqa: S310 - the live server, http only
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - our own live server
        assert response.status == 200
        assert json.load(response) == {"username": "alice", "is_staff": False}

    page.goto(f"{live_server.url}/accounts/token/")
    assert page.locator("#new-token").count() == 0
    assert page.inner_text("#token-prefix") == f"{key[:6]}…"


def test_a_wrong_password_keeps_the_user_on_the_login_form(page, live_server, alice):
    page.goto(f"{live_server.url}/")
    page.wait_for_url(f"{live_server.url}/accounts/login/?next=/")
    page.fill("#id_username", "alice")
    page.fill("#id_password", "wrong")
    page.click("button[type=submit]")

    assert page.locator("text=didn't match").is_visible()
    assert page.url.startswith(f"{live_server.url}/accounts/login/")


def test_logging_out_returns_to_the_login_page(logged_in_page, live_server, alice):
    page = logged_in_page(alice)

    page.click("button:has-text('Log out')")

    page.wait_for_url(f"{live_server.url}/accounts/login/")
    page.goto(f"{live_server.url}/accounts/token/")
    page.wait_for_url(f"{live_server.url}/accounts/login/?next=/accounts/token/")


def test_the_api_docs_render_without_leaving_the_site(logged_in_page, live_server, alice):
    page = logged_in_page(alice)
    outside: list[str] = []

    def only_our_server(route):
        if route.request.url.startswith(live_server.url):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    page.route("**/*", only_our_server)
    page.goto(f"{live_server.url}/api/docs/")

    page.wait_for_selector("text=/api/me/")
    assert page.locator(".opblock-summary-path", has_text="/api/auth/token/").count() == 2
    assert outside == []


def test_every_menu_link_fits_a_desktop_and_a_phone_screen_and_log_out_works(
    logged_in_page, live_server, staff, tmp_path
):
    page = logged_in_page(staff)
    for width, height in ((1280, 800), (390, 844)):
        page.set_viewport_size({"width": width, "height": height})
        page.goto(f"{live_server.url}/accounts/token/")
        menu_button = page.locator("label.menu-button")
        assert menu_button.is_visible() == (width <= 800)
        if menu_button.is_visible():
            menu_button.click()
        page.screenshot(path=tmp_path / f"menu-{width}x{height}.png")

        items = page.locator(".site-menu nav a, .user-menu a, .user-menu button")
        labels = items.all_inner_texts()
        assert {"Predict", "Models", "Datasets", "Admin", "Change password", "Log out"} <= set(labels)
        for index in range(items.count()):
            box = items.nth(index).bounding_box()
            assert items.nth(index).is_visible(), labels[index]
            assert box["x"] >= 0, (width, labels[index], box)
            assert box["x"] + box["width"] <= width, (width, labels[index], box)
            assert box["y"] >= 0, (width, labels[index], box)
            assert box["y"] + box["height"] <= height, (width, labels[index], box)
        assert page.evaluate("document.documentElement.scrollWidth") <= width

    page.click(".user-menu button:has-text('Log out')")

    page.wait_for_url(f"{live_server.url}/accounts/login/")
    assert page.locator("text=You have been logged out.").is_visible()
    page.screenshot(path=tmp_path / "logged-out-390x844.png")
