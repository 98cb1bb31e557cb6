"""Fixtures of the accounts tests."""

from __future__ import annotations

import pytest
from django.core.cache import cache
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient


@pytest.fixture(autouse=True)
def _fresh_throttle_counters():
    """Throttle counters live in the process-wide local-memory cache; start every test from zero."""
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def api_client() -> APIClient:
    return APIClient()


@pytest.fixture
def token_client():
    """Returns an API client that authenticates with the given token key, and nothing else."""

    def make(key: str) -> APIClient:
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
        return client

    return make


@pytest.fixture
def alice_token(alice) -> Token:
    return Token.objects.create(user=alice)


@pytest.fixture
def cache_down(settings):
    """The limits' cache is a Redis server that refuses every connection."""
    settings.CACHES = {
        **settings.CACHES,
        "throttle": {
            "BACKEND": "mlops_site.redis_cache.RedisCache",
            "LOCATION": "redis://127.0.0.1:1/0",
        },
    }
