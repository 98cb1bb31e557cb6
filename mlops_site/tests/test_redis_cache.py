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
