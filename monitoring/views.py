"""Health endpoints (liveness without touching anything, readiness probing every outside system) and the
monitoring pages: every model at a glance, and one model's panels, all read from rollups."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_safe

from mlops_site import pages
from models_registry import charts as registry_charts
from monitoring import model_page_selectors, page_drift, page_selectors, selectors
from monitoring import page_charts as charts


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


# Who sees these pages follows /models/: every signed-in user sees every registered model (the registry
# pages are not scoped per user); predictions themselves stay scoped in the history.
@require_GET
@login_required
@pages.domain_errors
def overview(request: HttpRequest) -> HttpResponse:
    """Every registered model in one table: production version, live score against the policy's
    threshold over `?window=`, a week of volume, last retraining, drift status and estimated score."""
    window = page_selectors.window_check(request.GET.get("window"))
    rows = page_selectors.monitoring_overview(window=window)
    items = [
        {
            "row": row,
            "spark_id": f"spark-{row.model.pk}",
            "spark": charts.sparkline_figure(hours=row.spark_hours, counts=row.spark_counts),
        }
        for row in rows
    ]
    return render(
        request,
        "monitoring/overview.html",
        {"items": items, "window": window, "windows": page_selectors.OVERVIEW_WINDOWS},
    )


def _model_figures(found: model_page_selectors.ModelMonitoring) -> dict[str, Any]:
    state = found.challenger
    challenger = None
    if state.comparison is not None and state.champion is not None and state.challenger is not None:
        # The model page's chart of the same comparison.
        challenger = registry_charts.challenger_comparison_figure(
            days=state.comparison.days,
            task=state.comparison.task,
            champion_label=f"v{state.champion.version} (champion)",
            challenger_label=f"v{state.challenger.version} (challenger)",
        )
    return {
        "volume": charts.volume_figure(buckets=found.buckets, series=found.series),
        "score": charts.score_figure(
            buckets=found.buckets,
            series=found.series,
            metric=found.metric,
            threshold=found.policy.threshold if found.policy is not None else None,
        ),
        "coverage": charts.coverage_figure(buckets=found.buckets, coverage=found.coverage),
        "latency": charts.latency_figure(buckets=found.buckets, series=found.series),
        "delay": charts.delay_figure(bins=found.delay_bins, median_seconds=found.delay_median_seconds),
        "challenger": challenger,
    }


@require_GET
@login_required
@pages.domain_errors
def model_monitoring(request: HttpRequest, name: str) -> HttpResponse:
    """One model over `?period=`: volume, live score against the threshold, champion against challenger,
    coverage and label delay, drift per feature with one feature's distributions (`?feature=`)."""
    period = page_selectors.period_check(request.GET.get("period"))
    found = model_page_selectors.model_monitoring_get(name=name, period=period)
    drift = page_drift.feature_drift(production=found.production, feature=request.GET.get("feature"))
    figures = _model_figures(found)
    if drift is not None:
        figures["distribution"] = charts.distribution_figure(drift.distribution)
    return render(
        request,
        "monitoring/model.html",
        {
            "m": found,
            "drift": drift,
            "figures": figures,
            "metric_label": charts.metric_label(found.metric),
            "periods": list(page_selectors.PERIODS),
        },
    )
