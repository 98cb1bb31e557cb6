"""Logging in and out through Django's default pages."""

from __future__ import annotations

import pytest
from django.urls import reverse

from tests.factories import PASSWORD

pytestmark = pytest.mark.django_db


def test_the_login_page_renders_the_form(client):
    response = client.get(reverse("login"))

    assert response.status_code == 200
    assert b'id="id_username"' in response.content
    assert b'id="id_password"' in response.content
    assert b"csrfmiddlewaretoken" in response.content


def test_it_logs_in_with_the_right_password_and_goes_home(client, alice):
    response = client.post(reverse("login"), {"username": "alice", "password": PASSWORD})

    assert response.status_code == 302
    assert response["Location"] == reverse("home")
    assert client.session["_auth_user_id"] == str(alice.pk)


def test_it_refuses_a_wrong_password_with_a_message(client, alice):
    response = client.post(reverse("login"), {"username": "alice", "password": "wrong"})

    assert response.status_code == 200
    assert "didn't match" in response.content.decode()
    assert "_auth_user_id" not in client.session


def test_it_refuses_a_disabled_account(client, alice):
    alice.is_active = False
    alice.save()

    response = client.post(reverse("login"), {"username": "alice", "password": PASSWORD})

    assert response.status_code == 200
    assert "_auth_user_id" not in client.session


def test_it_follows_next_after_logging_in(client, alice):
    response = client.post(
        reverse("login"), {"username": "alice", "password": PASSWORD, "next": reverse("accounts:token")}
    )

    assert response["Location"] == reverse("accounts:token")


def test_it_does_not_follow_next_to_another_site(client, alice):
    response = client.post(
        reverse("login"), {"username": "alice", "password": PASSWORD, "next": "https://evil.example/"}
    )

    assert response["Location"] == reverse("home")


def test_logout_by_post_ends_the_session_and_shows_the_login_page(client, alice):
    client.force_login(alice)

    response = client.post(reverse("logout"))

    assert response.status_code == 302
    assert response["Location"] == reverse("login")
    assert "_auth_user_id" not in client.session


def test_logout_by_get_is_refused(client, alice):
    client.force_login(alice)

    response = client.get(reverse("logout"))

    assert response.status_code == 405
    assert client.session["_auth_user_id"] == str(alice.pk)


def test_the_home_page_sends_anonymous_visitors_to_login(client):
    response = client.get(reverse("home"))

    assert response.status_code == 302
    assert response["Location"] == f"{reverse('login')}?next=/"


def test_the_login_page_shows_the_site_name_not_the_host(client, settings):
    response = client.get(reverse("login"))

    assert f'<a class="brand" href="/">{settings.SITE_NAME}</a>' in response.content.decode()


def test_logging_out_says_so_on_the_login_page_once(client, alice):
    client.force_login(alice)

    response = client.post(reverse("logout"), follow=True)

    assert response.redirect_chain == [(reverse("login"), 302)]
    assert "You have been logged out." in response.content.decode()
    assert "You have been logged out." not in client.get(reverse("login")).content.decode()


def test_logging_out_when_not_logged_in_claims_nothing(client):
    response = client.post(reverse("logout"), follow=True)

    assert "You have been logged out." not in response.content.decode()


def test_the_login_page_links_the_password_reset(client):
    html = client.get(reverse("login")).content.decode()

    assert f'<a href="{reverse("password_reset")}">Forgot your password?</a>' in html
