"""The Redis cache keeps one redis-py client per pool and still behaves as Django's (service run)."""

from __future__ import annotations

import threading
import uuid

import pytest
from django.core.cache import caches

from mlops_site.redis_cache import RedisCache

pytestmark = pytest.mark.redis


def test_the_configured_cache_is_ours_and_reuses_its_client() -> None:
    cache = caches["throttle"]
    assert isinstance(cache, RedisCache)
    client = cache._cache.get_client(write=True)
    assert cache._cache.get_client(write=True) is client
    assert cache._cache.get_client() is client  # one server: reads use the same pool


def test_values_round_trip_expire_and_count_like_djangos() -> None:
    cache = caches["throttle"]
    key = f"test-{uuid.uuid4().hex}"
    cache.set(key, [1.5, 2.5], timeout=30)
    assert cache.get(key) == [1.5, 2.5]
    assert cache.add(key, "other") is False
    counter = f"{key}-n"
    cache.set(counter, 1)
    assert cache.incr(counter, 4) == 5
    cache.set(f"{key}-gone", "x", timeout=0)
    assert cache.get(f"{key}-gone") is None
    cache.delete_many([key, counter])
    assert cache.get_many([key, counter]) == {}


def test_threads_share_nothing_they_should_not() -> None:
    # Django hands each thread its own cache object; each keeps its own client.
    seen: list[object] = []

    def remember() -> None:
        seen.append(caches["throttle"]._cache.get_client(write=True))

    threads = [threading.Thread(target=remember) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(seen) == 2
    assert seen[0] is not seen[1]


def test_incr_expiring_counts_from_nothing_sets_the_expiry_and_reads_back_with_get() -> None:
    cache = caches["throttle"]
    key = f"test-{uuid.uuid4().hex}"
    client = cache._cache.get_client(write=True)
    full = cache.make_and_validate_key(key)

    assert [cache.incr_expiring(key, 30) for _ in range(3)] == [1, 2, 3]
    assert cache.get(key) == 3
    assert 0 < client.ttl(full) <= 30
    cache.set(key, 10, timeout=None)  # no expiry: the next count gives it one
    assert cache.incr_expiring(key, 5) == 11
    assert 0 < client.ttl(full) <= 5
    cache.delete(key)


@pytest.mark.usefixtures("throttle_clock_frozen")
def test_the_throttle_counts_in_one_round_trip_on_redis(monkeypatch) -> None:
    from django.contrib.auth.models import AnonymousUser
    from rest_framework.test import APIRequestFactory

    from mlops_site.throttling import AnonRateThrottle

    cache = caches["throttle"]
    client = cache._cache.get_client(write=True)
    sent: list[object] = []
    original = type(client).execute_command

    def counting(self, *args, **options):
        sent.append(args[0])
        return original(self, *args, **options)

    # Every command the client sends goes through its execute_command.
    monkeypatch.setattr(type(client), "execute_command", counting)

    throttle = AnonRateThrottle()
    throttle.rate, (throttle.num_requests, throttle.duration) = "2/minute", (2, 60)
    request = APIRequestFactory().get("/", REMOTE_ADDR=f"10.{uuid.uuid4().int % 250}.0.1")
    request.user = AnonymousUser()
    throttle.allow_request(request, None)  # the first count also loads the script into the server
    sent.clear()
    allowed = [throttle.allow_request(request, None) for _ in range(2)]

    assert allowed == [True, False]
    assert sent == ["EVALSHA", "EVALSHA"], "one command a count"
