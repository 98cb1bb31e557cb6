"""POST/DELETE /api/auth/token/ and GET /api/me/."""

from __future__ import annotations

import pytest
from rest_framework.authtoken.models import Token

from mlops_site.tests.helpers import error_body
from tests.factories import PASSWORD

pytestmark = pytest.mark.django_db

TOKEN_URL = "/api/auth/token/"
ME_URL = "/api/me/"


def assert_refused(response, detail: str, code: str) -> None:
    # 401, not 403: TokenAuthentication comes first in DEFAULT_AUTHENTICATION_CLASSES, so the answer says how
    # to authenticate.
    body = error_body(response, 401, code)
    assert response["WWW-Authenticate"] == "Token"
    assert body["detail"] == detail


def test_good_credentials_get_a_working_token(api_client, alice, token_client):
    response = api_client.post(TOKEN_URL, {"username": "alice", "password": PASSWORD}, format="json")

    assert response.status_code == 200
    key = response.json()["token"]
    assert key == Token.objects.get(user=alice).key
    assert token_client(key).get(ME_URL).json() == {"username": "alice", "is_staff": False}


def test_asking_again_returns_the_same_token(api_client, alice):
    first = api_client.post(TOKEN_URL, {"username": "alice", "password": PASSWORD}).json()["token"]
    second = api_client.post(TOKEN_URL, {"username": "alice", "password": PASSWORD}).json()["token"]

    assert first == second


def test_a_wrong_password_is_a_401_without_a_token(api_client, alice):
    response = api_client.post(TOKEN_URL, {"username": "alice", "password": "nope"}, format="json")

    body = error_body(response, 401, "authentication_failed")
    assert body["detail"] == "Unable to log in with the given username and password."
    assert not Token.objects.filter(user=alice).exists()


def test_an_unknown_user_gets_the_same_answer_as_a_wrong_password(api_client):
    response = api_client.post(TOKEN_URL, {"username": "nobody", "password": "nope"}, format="json")

    body = error_body(response, 401, "authentication_failed")
    assert body["detail"] == "Unable to log in with the given username and password."


def test_a_disabled_account_gets_no_token(api_client, alice):
    alice.is_active = False
    alice.save()

    response = api_client.post(TOKEN_URL, {"username": "alice", "password": PASSWORD}, format="json")

    assert response.status_code == 401
    assert not Token.objects.filter(user=alice).exists()


def test_missing_fields_are_named(api_client):
    response = api_client.post(TOKEN_URL, {}, format="json")

    body = error_body(response, 400, "invalid")
    assert [(e["field"], e["code"]) for e in body["errors"]] == [
        ("username", "required"),
        ("password", "required"),
    ]


def test_a_malformed_body_is_a_400(api_client):
    response = api_client.post(TOKEN_URL, "{not json", content_type="application/json")

    assert "JSON parse error" in error_body(response, 400, "parse_error")["detail"]


def test_a_form_encoded_body_works_too(api_client, alice):
    response = api_client.post(TOKEN_URL, {"username": "alice", "password": PASSWORD})

    assert response.status_code == 200


def test_get_on_the_token_endpoint_is_not_allowed(api_client, alice):
    api_client.force_authenticate(alice)

    body = error_body(api_client.get(TOKEN_URL), 405, "method_not_allowed")
    assert body["detail"] == 'Method "GET" not allowed.'


def test_delete_revokes_the_callers_token(alice_token, token_client):
    client = token_client(alice_token.key)

    response = client.delete(TOKEN_URL)

    assert response.status_code == 204
    assert not Token.objects.filter(key=alice_token.key).exists()
    assert_refused(client.get(ME_URL), "Invalid token.", "authentication_failed")


def test_delete_leaves_other_users_tokens_alone(alice_token, bob, token_client):
    bobs = Token.objects.create(user=bob)

    token_client(alice_token.key).delete(TOKEN_URL)

    assert Token.objects.filter(key=bobs.key).exists()


def test_delete_by_a_session_user_without_a_token_is_harmless(api_client, alice):
    api_client.force_login(alice)

    assert api_client.delete(TOKEN_URL).status_code == 204


def test_delete_needs_authentication(api_client):
    assert_refused(
        api_client.delete(TOKEN_URL), "Authentication credentials were not provided.", "not_authenticated"
    )


def test_me_with_a_token(staff, token_client):
    token = Token.objects.create(user=staff)

    response = token_client(token.key).get(ME_URL)

    assert response.status_code == 200
    assert response.json() == {"username": "sam-staff", "is_staff": True}


def test_me_with_a_session(client, alice):
    client.force_login(alice)

    response = client.get(ME_URL)

    assert response.status_code == 200
    assert response.json() == {"username": "alice", "is_staff": False}


def test_me_refuses_anonymous_callers(api_client):
    assert_refused(
        api_client.get(ME_URL), "Authentication credentials were not provided.", "not_authenticated"
    )


def test_me_refuses_an_unknown_token(token_client):
    assert_refused(token_client("0" * 40).get(ME_URL), "Invalid token.", "authentication_failed")


def test_me_refuses_a_token_of_a_disabled_user(alice, alice_token, token_client):
    alice.is_active = False
    alice.save()

    assert_refused(
        token_client(alice_token.key).get(ME_URL), "User inactive or deleted.", "authentication_failed"
    )
