"""API rate limits as fixed-window counters: one small integer per client and window in the throttle cache."""

from __future__ import annotations

import logging
import math
from typing import Any

from django.core.cache import caches
from rest_framework import throttling

from mlops_site import client_ip

logger = logging.getLogger(__name__)

#: The cache alias holding the counters (settings.CACHES): Redis when configured, else per-process memory.
CACHE_ALIAS = "throttle"


class FixedWindowMixin:
    """Counts requests per client in fixed windows (one atomic command on Redis, `add` + `incr` elsewhere).

    DRF's own throttles keep a list of every request time in the window, read, trimmed, pickled and
    written back on every request: at the default 6000/minute that is up to 6000 floats per call, and
    with the file-based cache a temporary file written and renamed per request.
    """

    def get_ident(self, request: Any) -> str:
        # DRF's own reads X-Forwarded-For from anyone, so a client could pick a fresh budget per request.
        return client_ip.client_address(request)

    def allow_request(self, request: Any, view: Any) -> bool:
        if self.rate is None:
            return True
        self.key = self.get_cache_key(request, view)
        if self.key is None:
            return True
        cache = caches[CACHE_ALIAS]
        self.now = self.timer()
        window = int(self.now // self.duration)
        self.window_ends = (window + 1) * self.duration
        key = f"{self.key}:{window}"
        try:
            count = _counted(cache, key, self.duration + 1)
        except Exception as exc:
            # A rate limit is not worth an outage: with the cache (Redis) down, requests go unlimited.
            logger.warning("API throttle cache unavailable, request allowed unthrottled: %s", exc)
            return True
        return count <= self.num_requests

    def wait(self) -> float:
        return max(1.0, math.ceil(self.window_ends - self.now))


def _counted(cache: Any, key: str, timeout: int) -> int:
    """Count one more request at `key`; the count expires `timeout` seconds after its window opened (or,
    on Redis, after its latest request), so it never expires mid-window."""
    incr_expiring = getattr(cache, "incr_expiring", None)
    if incr_expiring is not None:
        return incr_expiring(key, timeout)
    cache.add(key, 0, timeout)
    try:
        return cache.incr(key)
    except ValueError:  # evicted between add and incr
        cache.set(key, 1, timeout)
        return 1


class AnonRateThrottle(FixedWindowMixin, throttling.AnonRateThrottle):
    pass


class UserRateThrottle(FixedWindowMixin, throttling.UserRateThrottle):
    pass


class ScopedRateThrottle(FixedWindowMixin, throttling.ScopedRateThrottle):
    """The rate named by the view's `throttle_scope`, per user or, anonymously, per client address."""

    def allow_request(self, request: Any, view: Any) -> bool:
        # DRF's ScopedRateThrottle reads the scope here, then defers to the counting it inherits.
        self.scope = getattr(view, self.scope_attr, None)
        if not self.scope:
            return True
        self.rate = self.get_rate()
        self.num_requests, self.duration = self.parse_rate(self.rate)
        return super().allow_request(request, view)
