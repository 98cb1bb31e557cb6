"""The header every page shares: the account links, and the site's icon (also at /favicon.ico)."""

from __future__ import annotations

import pytest
from django.contrib.staticfiles import finders
from django.templatetags.static import static
from django.urls import reverse

pytestmark = pytest.mark.django_db


def test_the_user_menu_links_change_password_and_log_out(client, alice):
    client.force_login(alice)

    html = client.get(reverse("accounts:token")).content.decode()

    assert f'<a href="{reverse("password_change")}">Change password</a>' in html
    assert f'action="{reverse("logout")}"' in html
    assert 'id="menu-toggle"' in html
    assert '<label for="menu-toggle" class="menu-button">Menu</label>' in html


def test_anonymous_pages_show_no_menu(client):
    html = client.get(reverse("login")).content.decode()

    assert "menu-toggle" not in html
    assert "Log out" not in html


def test_every_page_names_the_svg_icon(client):
    html = client.get(reverse("login")).content.decode()

    assert f'<link rel="icon" href="{static("favicon.svg")}" type="image/svg+xml">' in html


def test_favicon_ico_redirects_to_the_icon_instead_of_a_404(client):
    response = client.get("/favicon.ico")

    assert response.status_code == 302
    assert response["Location"] == static("favicon.svg")


def test_the_icon_is_an_svg_file_the_static_files_serve():
    path = finders.find("favicon.svg")

    assert path is not None
    with open(path, encoding="utf-8") as icon:
        assert icon.read().startswith('<svg xmlns="http://www.w3.org/2000/svg"')
