"""API rate limits: anonymous, per-user, and the stricter "auth" scope of the token endpoint."""

from __future__ import annotations

import pytest
from rest_framework.authtoken.models import Token
from rest_framework.throttling import SimpleRateThrottle

from accounts import api
from mlops_site.tests.helpers import error_body
from tests.factories import PASSWORD

pytestmark = pytest.mark.django_db


@pytest.fixture
def tiny_rates(monkeypatch, throttle_clock_frozen):
    """DRF copies DEFAULT_THROTTLE_RATES onto the class at import, so the settings fixture cannot reach it.
    The throttles' clock stands still (throttle_clock_frozen), so no test straddles two windows."""

    def apply(**rates: str) -> None:
        monkeypatch.setattr(SimpleRateThrottle, "THROTTLE_RATES", rates)

    return apply


def test_anonymous_callers_are_throttled_with_a_429(api_client, tiny_rates):
    tiny_rates(anon="2/minute", user="100/minute")

    statuses = [api_client.get("/api/schema/").status_code for _ in range(3)]

    assert statuses == [200, 200, 429]


def test_each_user_has_their_own_budget(alice, bob, token_client, tiny_rates):
    tiny_rates(anon="100/minute", user="2/minute")
    alices = token_client(Token.objects.create(user=alice).key)
    bobs = token_client(Token.objects.create(user=bob).key)

    statuses = [alices.get("/api/me/").status_code for _ in range(3)]

    assert statuses == [200, 200, 429]
    throttled = alices.get("/api/me/")
    assert "throttled" in error_body(throttled, 429, "throttled")["detail"].lower()
    assert int(throttled["Retry-After"]) > 0
    assert bobs.get("/api/me/").status_code == 200


def test_password_attempts_are_throttled_by_the_auth_scope(api_client, alice, tiny_rates):
    tiny_rates(anon="100/minute", user="100/minute", auth="2/minute")
    body = {"username": "alice", "password": "wrong"}

    statuses = [api_client.post("/api/auth/token/", body).status_code for _ in range(2)]
    statuses.append(
        api_client.post("/api/auth/token/", {"username": "alice", "password": PASSWORD}).status_code
    )

    assert statuses == [401, 401, 429]
    assert not Token.objects.filter(user=alice).exists()


def test_the_auth_scope_falls_back_to_ten_a_minute_without_a_setting(api_client, alice, tiny_rates):
    tiny_rates(anon="100/minute", user="100/minute")

    # Empty bodies count as attempts too, and skip eleven slow password hashes.
    statuses = [api_client.post("/api/auth/token/", {}).status_code for _ in range(11)]

    assert api.AUTH_THROTTLE_FALLBACK_RATE == "10/minute"
    assert statuses == [400] * 10 + [429]


def test_the_auth_scope_does_not_spend_the_anonymous_budget(api_client, alice, tiny_rates):
    tiny_rates(anon="1/minute", user="100/minute", auth="100/minute")

    for _ in range(3):
        assert (
            api_client.post("/api/auth/token/", {"username": "alice", "password": PASSWORD}).status_code
            == 200
        )


def test_sixty_guesses_with_a_new_forwarded_address_each_are_throttled(
    api_client, alice, settings, tiny_rates
):
    tiny_rates(anon="100/minute", user="100/minute", auth="10/minute")
    settings.TRUSTED_PROXIES = []
    # The per-account and per-client sign-in limits would stop this too; here only the rate limit may.
    settings.LOGIN_FAILURE_LIMIT = settings.LOGIN_CLIENT_FAILURE_LIMIT = 1000

    statuses = [
        api_client.post(
            "/api/auth/token/",
            {"username": "alice", "password": f"guess-{n}"},
            HTTP_X_FORWARDED_FOR=f"198.51.{n // 256}.{n % 256}",
        ).status_code
        for n in range(60)
    ]
    right = api_client.post(
        "/api/auth/token/", {"username": "alice", "password": PASSWORD}, HTTP_X_FORWARDED_FOR="192.0.2.1"
    )

    assert statuses == [401] * 10 + [429] * 50
    assert right.status_code == 429
    assert not Token.objects.filter(user=alice).exists()
