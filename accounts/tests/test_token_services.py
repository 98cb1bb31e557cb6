"""The token services: create, regenerate, revoke and obtain."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError
from rest_framework.authtoken.models import Token

from accounts import selectors, services

pytestmark = pytest.mark.django_db


def test_token_create_gives_the_user_a_40_character_key(alice):
    token = services.token_create(user=alice)

    assert len(token.key) == 40
    assert selectors.token_get(user=alice) == token


def test_token_create_refuses_a_second_token(alice):
    first = services.token_create(user=alice)

    with pytest.raises(ValidationError, match="already have an API token"):
        services.token_create(user=alice)
    assert list(Token.objects.filter(user=alice)) == [first]


def test_token_regenerate_replaces_the_key(alice):
    old = services.token_create(user=alice)

    new = services.token_regenerate(user=alice)

    assert new.key != old.key
    assert not Token.objects.filter(key=old.key).exists()
    assert selectors.token_get(user=alice) == new


def test_token_regenerate_creates_a_first_token(alice):
    token = services.token_regenerate(user=alice)

    assert selectors.token_get(user=alice) == token


def test_token_revoke_deletes_only_that_users_token(alice, bob):
    services.token_create(user=alice)
    bobs = services.token_create(user=bob)

    assert services.token_revoke(user=alice) is True

    assert selectors.token_get(user=alice) is None
    assert selectors.token_get(user=bob) == bobs


def test_token_revoke_twice_is_harmless(alice):
    services.token_create(user=alice)
    services.token_revoke(user=alice)

    assert services.token_revoke(user=alice) is False


def test_token_obtain_returns_the_same_token_until_it_is_revoked(alice):
    first = services.token_obtain(user=alice)

    assert services.token_obtain(user=alice) == first
    services.token_revoke(user=alice)
    assert services.token_obtain(user=alice).key != first.key


def test_the_masked_key_shows_only_a_prefix(alice):
    token = services.token_create(user=alice)

    masked = selectors.token_key_masked(token=token)

    assert masked == token.key[:6] + "…"
    assert token.key not in masked
