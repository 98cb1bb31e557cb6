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
