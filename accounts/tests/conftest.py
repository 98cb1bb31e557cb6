"""Fixtures of the accounts tests."""

from __future__ import annotations

import pytest
from django.core.cache import cache
from drf_spectacular.settings import spectacular_settings
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


SIDECAR_SETTINGS = {
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}


@pytest.fixture
def sidecar(settings, monkeypatch):
    """Serves Swagger UI from drf-spectacular-sidecar where settings.py does not yet; a no-op once it does."""
    if "drf_spectacular_sidecar" not in settings.INSTALLED_APPS:
        settings.INSTALLED_APPS = [*settings.INSTALLED_APPS, "drf_spectacular_sidecar"]
    for name, value in SIDECAR_SETTINGS.items():
        # drf-spectacular reads its settings once at import and ignores override_settings.
        monkeypatch.setattr(spectacular_settings, name, value)
