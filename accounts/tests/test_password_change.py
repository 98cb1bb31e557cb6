"""Changing one's password: only when logged in, with the current password, on the site's own pages."""

from __future__ import annotations

import pytest
from django.urls import reverse

from tests.factories import PASSWORD

pytestmark = pytest.mark.django_db

URL = "/accounts/password_change/"
NEW = "another-long-password-77"


def test_anonymous_visitors_are_sent_to_log_in(client):
    response = client.get(URL)

    assert response.status_code == 302
    assert response["Location"] == f"{reverse('login')}?next={URL}"


def test_anonymous_posts_change_nothing(client, alice):
    response = client.post(URL, {"old_password": PASSWORD, "new_password1": NEW, "new_password2": NEW})

    assert response.status_code == 302
    alice.refresh_from_db()
    assert alice.check_password(PASSWORD)


def test_the_page_has_the_site_s_look(client, alice):
    client.force_login(alice)

    html = client.get(URL).content.decode()

    assert 'class="topbar"' in html
    assert "<h1>Change password</h1>" in html
    assert 'name="old_password"' in html


def test_it_changes_the_password_and_keeps_the_user_logged_in(client, alice):
    client.force_login(alice)

    response = client.post(
        URL, {"old_password": PASSWORD, "new_password1": NEW, "new_password2": NEW}, follow=True
    )

    assert response.redirect_chain == [(reverse("password_change_done"), 302)]
    assert "Password changed" in response.content.decode()
    alice.refresh_from_db()
    assert alice.check_password(NEW)
    assert client.get(reverse("home")).status_code == 200


def test_a_wrong_current_password_is_refused_and_changes_nothing(client, alice):
    client.force_login(alice)

    response = client.post(URL, {"old_password": "wrong", "new_password1": NEW, "new_password2": NEW})

    assert response.status_code == 200
    assert "Your old password was entered incorrectly" in response.content.decode()
    alice.refresh_from_db()
    assert alice.check_password(PASSWORD)


def test_a_weak_new_password_is_refused_with_the_reason(client, alice):
    client.force_login(alice)

    response = client.post(
        URL, {"old_password": PASSWORD, "new_password1": "12345678", "new_password2": "12345678"}
    )

    assert response.status_code == 200
    assert "too common" in response.content.decode()
    alice.refresh_from_db()
    assert alice.check_password(PASSWORD)
