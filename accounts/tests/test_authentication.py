"""The API's token authentication: one fixed SQL join, with DRF's answers for every key it refuses."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework import exceptions
from rest_framework.authtoken.models import Token

from accounts.authentication import FastTokenAuthentication
from mlops_site.tests.helpers import error_body

pytestmark = pytest.mark.django_db

ME_URL = "/api/me/"


def test_a_key_gives_its_user_and_token_as_the_orm_would_in_one_query(alice):
    token = Token.objects.create(user=alice)

    with CaptureQueriesContext(connection) as queries:
        user, found = FastTokenAuthentication().authenticate_credentials(token.key)
        # The token's user is the same object: reading it costs nothing more.
        assert found.user is user

    assert len(queries) == 1
    expected = Token.objects.select_related("user").get(key=token.key)
    assert (found.key, found.user_id, found.created) == (expected.key, expected.user_id, expected.created)
    for field in type(user)._meta.concrete_fields:
        assert getattr(user, field.attname) == getattr(expected.user, field.attname), field.name
    assert user._state.adding is False
    assert user._state.db == "default"


def test_the_api_answers_to_a_token_and_forgets_it_once_revoked(alice, token_client):
    token = Token.objects.create(user=alice)
    client = token_client(token.key)
    assert client.get(ME_URL).json() == {"username": "alice", "is_staff": False}

    token.delete()

    body = error_body(client.get(ME_URL), 401, "authentication_failed")
    assert body["detail"] == "Invalid token."


def test_an_inactive_user_s_token_is_refused(alice, token_client):
    token = Token.objects.create(user=alice)
    alice.is_active = False
    alice.save(update_fields=["is_active"])

    body = error_body(token_client(token.key).get(ME_URL), 401, "authentication_failed")

    assert body["detail"] == "User inactive or deleted."


@pytest.mark.parametrize(
    "key", ["0" * 40, "0" * 41, "a" * 10_000, "abc\x00def", "ключ", "abc-def", "' OR '1'='1"]
)
def test_a_key_that_cannot_match_is_refused_without_a_500(alice, token_client, key):
    Token.objects.create(user=alice)

    with (
        CaptureQueriesContext(connection) as queries,
        pytest.raises(exceptions.AuthenticationFailed, match="Invalid token"),
    ):
        FastTokenAuthentication().authenticate_credentials(key)
    # Only a well-formed key is looked up.
    assert len(queries) == (1 if key == "0" * 40 else 0)
    if key.isprintable() and key.isascii():
        response = token_client(key).get(ME_URL)
        assert response.status_code == 401
        assert response["WWW-Authenticate"] == "Token"
