"""The fixed-window API throttles: counts per client and window, and a Retry-After within the window."""

from __future__ import annotations

import pytest
from django.test import RequestFactory
from rest_framework.request import Request

from mlops_site import throttling


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def throttle(monkeypatch):
    clock = Clock(1_000_020.0)
    monkeypatch.setattr(throttling.AnonRateThrottle, "THROTTLE_RATES", {"anon": "3/minute"})
    made = throttling.AnonRateThrottle()
    made.timer = clock
    return made, clock


def _request(address: str = "10.1.2.3") -> Request:
    return Request(RequestFactory().get("/api/me/", REMOTE_ADDR=address))


def test_it_allows_the_rate_then_refuses_until_the_window_ends(throttle):
    made, clock = throttle

    allowed = [made.allow_request(_request(), None) for _ in range(4)]

    assert allowed == [True, True, True, False]
    # 1,000,020 is a multiple of 60: the window runs to 1,000,080, so 20 s in there are 40 s to wait.
    clock.now = 1_000_040.0
    assert not made.allow_request(_request(), None)
    assert made.wait() == 40
    clock.now = 1_000_080.0
    assert made.allow_request(_request(), None)


def test_each_client_has_its_own_count(throttle):
    made, _ = throttle

    for _ in range(3):
        made.allow_request(_request("10.0.0.1"), None)

    assert not made.allow_request(_request("10.0.0.1"), None)
    assert made.allow_request(_request("10.0.0.2"), None)


def _forged(address: str, forwarded: str) -> Request:
    return Request(RequestFactory().get("/api/me/", REMOTE_ADDR=address, HTTP_X_FORWARDED_FOR=forwarded))


def test_a_forged_forwarded_header_does_not_change_the_throttle_key(throttle, settings):
    made, _ = throttle
    settings.TRUSTED_PROXIES = []

    keys = {made.get_cache_key(_forged("10.1.2.3", f"198.51.100.{n}"), None) for n in range(5)}

    assert keys == {made.get_cache_key(_request("10.1.2.3"), None)}
    allowed = [made.allow_request(_forged("10.1.2.3", f"198.51.100.{n}"), None) for n in range(4)]
    assert allowed == [True, True, True, False]


def test_through_a_trusted_proxy_the_client_behind_it_is_counted(throttle, settings):
    made, _ = throttle
    settings.TRUSTED_PROXIES = ["10.0.0.5"]

    for _ in range(3):
        made.allow_request(_forged("10.0.0.5", "6.6.6.6, 198.51.100.1"), None)

    assert not made.allow_request(_forged("10.0.0.5", "7.7.7.7, 198.51.100.1"), None)
    assert made.allow_request(_forged("10.0.0.5", "198.51.100.2"), None)


def test_with_the_cache_down_requests_are_allowed_and_a_warning_logged(throttle, settings, caplog):
    made, _ = throttle
    settings.CACHES = {
        **settings.CACHES,
        throttling.CACHE_ALIAS: {
            "BACKEND": "mlops_site.redis_cache.RedisCache",
            "LOCATION": "redis://127.0.0.1:1/0",
        },
    }

    allowed = [made.allow_request(_request(), None) for _ in range(5)]

    assert allowed == [True] * 5
    assert "API throttle cache unavailable" in caplog.text
