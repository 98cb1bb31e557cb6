"""Health endpoints: liveness without touching anything, readiness probing every outside system."""

from __future__ import annotations

from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe

from monitoring import selectors


@never_cache
@require_safe
def healthz(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


@never_cache
@require_safe
def readyz(request: HttpRequest) -> JsonResponse:
    readiness = selectors.readiness_get()
    body: dict[str, object] = {"checks": readiness.checks, "workers": readiness.workers}
    if readiness.ready:
        return JsonResponse({"status": "ready", **body})
    return JsonResponse({"status": "unavailable", "failing": readiness.failing, **body}, status=503)
