"""GET /metrics for Prometheus: who may scrape, and the registry one scrape reads.

Allowed with `Authorization: Bearer <METRICS_TOKEN>`, or from a client address (as mlops_site.client_ip
resolves it, so a forged X-Forwarded-For proves nothing) in METRICS_ALLOWED_NETWORKS. With neither set,
only loopback may scrape.
"""

from __future__ import annotations

import functools
import hmac
import ipaddress
from collections.abc import Iterator

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest, multiprocess
from prometheus_client.core import Metric

from mlops_site import client_ip
from monitoring import collector, prometheus

LOOPBACK = ("127.0.0.0/8", "::1/128")


@functools.lru_cache(maxsize=8)
def _networks(entries: tuple[str, ...]) -> tuple[client_ip.IPNetwork, ...]:
    # Settings refuse entries that do not parse, so none is skipped here in practice.
    return tuple(ipaddress.ip_network(entry, strict=False) for entry in entries)


def allowed_networks() -> tuple[client_ip.IPNetwork, ...]:
    """METRICS_ALLOWED_NETWORKS; when neither it nor METRICS_TOKEN is set, loopback."""
    entries = tuple(settings.METRICS_ALLOWED_NETWORKS)
    if not entries and not settings.METRICS_TOKEN:
        entries = LOOPBACK
    return _networks(entries)


def _from_allowed_network(request: HttpRequest) -> bool:
    address = client_ip.client_address(request)
    if not address:
        return False
    parsed = ipaddress.ip_address(address)
    return any(parsed.version == net.version and parsed in net for net in allowed_networks())


def refusal(request: HttpRequest) -> JsonResponse | None:
    """The 401 or 403 answer to a scrape that may not read the metrics, or None when it may."""
    header = request.headers.get("Authorization", "")
    if header:
        scheme, _, credentials = header.partition(" ")
        token = settings.METRICS_TOKEN
        if scheme.lower() != "bearer" or not credentials.strip():
            return _refused(401, "Send the metrics token as `Authorization: Bearer <METRICS_TOKEN>`.")
        # Bytes, so a header with characters outside ASCII is a wrong token rather than a TypeError.
        if token and hmac.compare_digest(credentials.strip().encode(), token.encode()):
            return None
        return _refused(401, "The metrics token is wrong.")
    if _from_allowed_network(request):
        return None
    if settings.METRICS_TOKEN:
        return _refused(401, "Send the metrics token as `Authorization: Bearer <METRICS_TOKEN>`.")
    return _refused(403, "Metrics may be read only from METRICS_ALLOWED_NETWORKS (by default, loopback).")


def _refused(status: int, detail: str) -> JsonResponse:
    code = "not_authenticated" if status == 401 else "permission_denied"
    response = JsonResponse({"detail": detail, "code": code, "errors": []}, status=status)
    if status == 401:
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
    return response


class _ThisProcess:
    """The process's own metrics (django-prometheus's and ours), when each process counts on its own."""

    def collect(self) -> Iterator[Metric]:
        return REGISTRY.collect()


def metrics_registry() -> CollectorRegistry:
    """A registry for one scrape: every process's counters, or this process's, and the database gauges."""
    registry = CollectorRegistry(auto_describe=False)
    path = prometheus.multiprocess_dir()
    if path:
        multiprocess.MultiProcessCollector(registry, path=path)
    else:
        registry.register(_ThisProcess())  # type: ignore[arg-type]
    registry.register(collector.DatabaseCollector())  # type: ignore[arg-type]
    return registry


@never_cache
@require_safe
def metrics(request: HttpRequest) -> HttpResponse:
    refused = refusal(request)
    if refused is not None:
        return refused
    return HttpResponse(generate_latest(metrics_registry()), content_type=CONTENT_TYPE_LATEST)
