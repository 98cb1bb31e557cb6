"""The API token page: create, and regenerate or revoke after a confirmation, with the key shown once."""

from __future__ import annotations

import pytest
from django.urls import reverse
from rest_framework.authtoken.models import Token

from mlops_site.tests.helpers import error_body

pytestmark = pytest.mark.django_db

URL = "/accounts/token/"
REVOKE_URL = "/accounts/token/revoke/"
REGENERATE_URL = "/accounts/token/regenerate/"


@pytest.fixture
def alice_client(client, alice):
    client.force_login(alice)
    return client


def assert_token_refused(response) -> None:
    # 401, not 403: TokenAuthentication comes first in DEFAULT_AUTHENTICATION_CLASSES.
    body = error_body(response, 401, "authentication_failed")
    assert body["detail"] == "Invalid token."


def messages_of(response) -> list[str]:
    return [str(message) for message in response.context["messages"]]


def test_the_url_names_point_at_the_token_page_and_its_confirmations():
    assert reverse("accounts:token") == URL
    assert reverse("accounts:token-revoke") == REVOKE_URL
    assert reverse("accounts:token-regenerate") == REGENERATE_URL


def test_it_requires_login(client):
    response = client.get(URL)

    assert response.status_code == 302
    assert response["Location"] == f"{reverse('login')}?next={URL}"


def test_it_says_when_the_user_has_no_token(alice_client):
    response = alice_client.get(URL)

    assert response.status_code == 200
    assert b"You have no API token" in response.content
    assert b'value="create"' in response.content


def test_creating_shows_the_key_once(alice_client, alice):
    response = alice_client.post(URL, {"action": "create"})

    key = Token.objects.get(user=alice).key
    assert response.status_code == 200
    assert key.encode() in response.content
    assert "no-store" in response["Cache-Control"]

    later = alice_client.get(URL)

    assert key.encode() not in later.content
    assert key[:6].encode() in later.content
    assert b"Regenerate" in later.content


def test_creating_a_second_token_is_refused_and_keeps_the_first(alice_client, alice):
    alice_client.post(URL, {"action": "create"})
    key = Token.objects.get(user=alice).key

    response = alice_client.post(URL, {"action": "create"}, follow=True)

    assert response.redirect_chain == [(URL, 302)]
    assert any("already have an API token" in m for m in messages_of(response))
    assert Token.objects.get(user=alice).key == key
    assert key.encode() not in response.content


def test_the_page_offers_regenerate_and_revoke_as_links_to_their_confirmations(alice_client, alice):
    Token.objects.create(user=alice)

    html = alice_client.get(URL).content.decode()

    assert f'href="{REGENERATE_URL}"' in html
    assert f'href="{REVOKE_URL}"' in html
    assert 'value="revoke"' not in html
    assert 'value="regenerate"' not in html


def test_asking_to_revoke_shows_a_confirmation_and_revokes_nothing(alice_client, alice, token_client):
    key = Token.objects.create(user=alice).key

    response = alice_client.get(REVOKE_URL)

    assert response.status_code == 200
    html = response.content.decode()
    assert "Revoke your API token?" in html
    assert f"{key[:6]}…" in html
    assert "stops working" in html
    assert f'action="{REVOKE_URL}"' in html
    assert "no-store" in response["Cache-Control"]
    assert Token.objects.get(user=alice).key == key
    assert token_client(key).get("/api/me/").status_code == 200


def test_confirming_revokes_the_token_and_redirects(alice_client, alice, token_client):
    key = Token.objects.create(user=alice).key

    response = alice_client.post(REVOKE_URL, follow=True)

    assert response.redirect_chain == [(URL, 302)]
    assert any("revoked" in m for m in messages_of(response))
    assert b"You have no API token" in response.content
    assert not Token.objects.filter(user=alice).exists()
    assert_token_refused(token_client(key).get("/api/me/"))


def test_asking_to_regenerate_shows_a_confirmation_and_changes_nothing(alice_client, alice, token_client):
    key = Token.objects.create(user=alice).key

    response = alice_client.get(REGENERATE_URL)

    html = response.content.decode()
    assert response.status_code == 200
    assert "Regenerate your API token?" in html
    assert "stops working" in html
    assert Token.objects.get(user=alice).key == key
    assert token_client(key).get("/api/me/").status_code == 200


def test_confirming_regenerate_invalidates_the_old_key_and_shows_the_new_one_once(
    alice_client, alice, token_client
):
    old_key = Token.objects.create(user=alice).key

    response = alice_client.post(REGENERATE_URL)

    new_key = Token.objects.get(user=alice).key
    assert new_key != old_key
    assert response.status_code == 200
    assert new_key.encode() in response.content
    assert old_key.encode() not in response.content
    assert "no-store" in response["Cache-Control"]
    assert_token_refused(token_client(old_key).get("/api/me/"))
    me = token_client(new_key).get("/api/me/")
    assert me.status_code == 200
    assert me.json()["username"] == "alice"
    assert new_key.encode() not in alice_client.get(URL).content


@pytest.mark.parametrize("action", ["revoke", "regenerate"])
def test_an_unconfirmed_post_to_the_token_page_only_leads_to_the_confirmation(alice_client, alice, action):
    key = Token.objects.create(user=alice).key

    response = alice_client.post(URL, {"action": action})

    assert response.status_code == 302
    assert response["Location"] == reverse(f"accounts:token-{action}")
    assert Token.objects.get(user=alice).key == key


@pytest.mark.parametrize("url", [REVOKE_URL, REGENERATE_URL])
def test_the_confirmations_send_a_user_without_a_token_back_to_the_token_page(alice_client, url):
    response = alice_client.get(url, follow=True)

    assert response.redirect_chain == [(URL, 302)]
    assert any("no API token" in m for m in messages_of(response))


def test_revoking_without_a_token_says_so(alice_client):
    response = alice_client.post(REVOKE_URL, follow=True)

    assert any("no API token" in m for m in messages_of(response))


@pytest.mark.parametrize("url", [REVOKE_URL, REGENERATE_URL])
def test_the_confirmations_require_login(client, url):
    response = client.post(url)

    assert response.status_code == 302
    assert response["Location"] == f"{reverse('login')}?next={url}"


@pytest.mark.parametrize("url", [REVOKE_URL, REGENERATE_URL])
def test_the_confirmations_refuse_other_methods(alice_client, alice, url):
    key = Token.objects.create(user=alice).key

    response = alice_client.delete(url)

    assert response.status_code == 405
    assert Token.objects.get(user=alice).key == key


@pytest.mark.parametrize("url", [REVOKE_URL, REGENERATE_URL])
def test_confirming_requires_a_csrf_token(alice, url):
    from django.test import Client

    key = Token.objects.create(user=alice).key
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)

    response = client.post(url)

    assert response.status_code == 403
    assert Token.objects.get(user=alice).key == key


def test_a_user_revokes_only_their_own_token(client, alice, bob):
    alices = Token.objects.create(user=alice)
    Token.objects.create(user=bob)
    client.force_login(bob)

    client.post(REVOKE_URL)

    assert not Token.objects.filter(user=bob).exists()
    assert Token.objects.get(user=alice).key == alices.key


def test_an_unknown_action_is_a_400_naming_it(alice_client, alice):
    response = alice_client.post(URL, {"action": "<b>steal</b>"})

    assert response.status_code == 400
    assert response["Content-Type"].startswith("text/plain")
    assert b"Unknown token action" in response.content
    assert not Token.objects.filter(user=alice).exists()


def test_a_missing_action_is_a_400(alice_client):
    response = alice_client.post(URL, {})

    assert response.status_code == 400
    assert b"which token action" in response.content


def test_actions_require_a_csrf_token(alice):
    from django.test import Client

    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)

    response = client.post(URL, {"action": "create"})

    assert response.status_code == 403
    assert not Token.objects.filter(user=alice).exists()


def test_each_user_sees_only_their_own_token(client, alice, bob):
    bobs = Token.objects.create(user=bob)
    client.force_login(alice)

    response = client.get(URL)

    assert bobs.key[:6].encode() not in response.content
    assert b"You have no API token" in response.content
