"""Registry pages: models and versions for every user; files, challenger mode and deleting an empty model
for staff. Transitions and rollback are in transition_views, uploads in upload_views."""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urlencode

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from feedback import selectors as feedback_selectors
from mlops_site import downloads, pages
from mlops_site.pages import staff_required
from models_registry import (
    challenger_services,
    charts,
    mlflow_gateway,
    selectors,
    services,
    transition_services,
)
from models_registry.forms import ChallengerForm
from models_registry.models import ModelVersion, RegisteredModel, Stage
from training import selectors as training_selectors

logger = logging.getLogger(__name__)

TRANSITION_LABELS = {"staging": "To staging", "production": "To production", "archived": "Archive"}
FILE_KINDS = {"skops": ("skops_key", "skops_sha256"), "onnx": ("onnx_key", "onnx_sha256")}


@require_GET
@login_required
def model_list(request: HttpRequest) -> HttpResponse:
    models = selectors.registered_model_list()
    if not request.user.is_staff:
        # A model without versions has nothing to predict with; staff see it, to train or delete it.
        models = models.filter(version_count__gt=0)
    return render(request, "models_registry/model_list.html", {"models": list(models)})


def _version_rows(versions: list[ModelVersion], metric_names: list[str]) -> list[dict[str, Any]]:
    rows = []
    for version in versions:
        rows.append(
            {
                "version": version,
                "metrics": [(version.metrics or {}).get(name) for name in metric_names],
                "gate_failures": transition_services.quality_gate_check(model_version=version),
                "transitions": [
                    (stage, TRANSITION_LABELS[stage])
                    for stage, sources in transition_services.ALLOWED_SOURCES.items()
                    if version.stage in sources
                ],
            }
        )
    return rows


def _live_quality(
    registered: RegisteredModel, versions: list[ModelVersion], *, window: str, last_n: int
) -> list[dict[str, Any]]:
    """Live quality of the production version and of every version with feedback, production first."""
    figures = feedback_selectors.model_quality(
        registered_model=registered, window=window, last_n=last_n, versions=versions
    )
    shown = [v for v in figures if v["live"]["n"] or v["stage"] == "production"]
    return sorted(shown, key=lambda v: v["stage"] != "production")


def _model_detail_context(
    registered: RegisteredModel, *, window: str | None = None, last_n: str | None = None
) -> dict[str, Any]:
    """Raises feedback's Invalid for an unknown window or `last` (the page answers 400 naming it)."""
    window, last = feedback_selectors.window_check(window, last_n)
    versions = list(selectors.model_version_list(model_name=registered.name))
    metric_names = charts.metric_names(versions)
    live_quality = _live_quality(registered, versions, window=window, last_n=last)
    return {
        "live_quality": live_quality,
        "live_window": window,
        "live_last_n": last,
        "live_labelled": any(v["live"]["n"] for v in live_quality),
        "model": registered,
        "versions": versions,
        "rows": _version_rows(versions, metric_names),
        "metric_labels": [charts.metric_label(name) for name in metric_names],
        "thresholds": [
            (
                charts.metric_label(metric),
                "at least" if "min" in bound else "at most",
                next(iter(bound.values())),
            )
            for metric, bound in sorted((registered.min_metrics or {}).items())
        ],
        "comparison_figure": charts.versions_metrics_figure(
            versions=versions, thresholds=registered.min_metrics
        ),
        "rollback": _rollback_offer(registered, versions),
        "train_url": _train_url(registered, versions),
        "transitions": list(selectors.stage_transition_list(registered_model=registered)[:20]),
        **_challenger_context(registered, versions),
        # The panel is shown with the versions; a model without any has nothing to retrain.
        "retraining_panel": _retraining_context(registered) if versions else None,
    }


def _rollback_offer(registered: RegisteredModel, versions: list[ModelVersion]) -> dict[str, Any] | None:
    """The rollback the model page offers, named by the way it goes (back, or returning a newer version)."""
    target = transition_services.rollback_target(registered_model=registered)
    if target is None:
        return None
    current = next((v for v in versions if v.stage == Stage.PRODUCTION), None)
    return {
        "target": target,
        "current": current,
        "label": transition_services.rollback_label(target=target, current=current),
        "goes_back": transition_services.rollback_goes_back(target=target, current=current),
    }


def _train_url(registered: RegisteredModel, versions: list[ModelVersion]) -> str:
    """The training form for a new version of the model, on the dataset its production version (else its
    newest trained version) learnt from."""
    trained = [v for v in versions if v.dataset_version_id]
    source = next((v for v in trained if v.stage == Stage.PRODUCTION), trained[0] if trained else None)
    query = {"model": registered.name}
    if source is not None:
        query["dataset_version"] = str(source.dataset_version_id)
    return f"{reverse('training:list')}?{urlencode(query)}"


def _challenger_context(registered: RegisteredModel, versions: list[ModelVersion]) -> dict[str, Any]:
    """The champion-and-challenger panel: the mode, both versions, their comparison and its chart."""
    state = selectors.challenger_state(registered_model=registered, versions=versions, live=False)
    figure = None
    if state.comparison is not None and state.champion is not None and state.challenger is not None:
        figure = charts.challenger_comparison_figure(
            days=state.comparison.days,
            task=state.comparison.task,
            champion_label=f"v{state.champion.version} (champion)",
            challenger_label=f"v{state.challenger.version} (challenger)",
        )
    return {
        "challenger": state,
        "challenger_figure": figure,
        "challenger_form": ChallengerForm(
            initial={"mode": registered.challenger_mode, "canary_percent": registered.canary_percent}
        ),
    }


def _retraining_context(registered: RegisteredModel) -> dict[str, Any]:
    """The retraining panel (training's selector), and which way the policy's metric is better."""
    panel = training_selectors.retraining_panel(registered_model=registered)
    policy = panel["policy"]
    return {**panel, "lower_is_better": policy is not None and policy.metric in charts.LOWER_IS_BETTER}


@require_GET
@login_required
@pages.domain_errors
def model_detail(request: HttpRequest, name: str) -> HttpResponse:
    """The model's versions side by side, with their live quality over `?window=` (and `?last=`)."""
    registered = selectors.registered_model_get(name=name)
    context = _model_detail_context(
        registered, window=request.GET.get("window"), last_n=request.GET.get("last")
    )
    return render(request, "models_registry/model_detail.html", context)


def _version_detail_context(
    version: ModelVersion, *, window: str | None = None, last_n: str | None = None
) -> dict[str, Any]:
    """Raises feedback's Invalid for an unknown window or `last` (the page answers 400 naming it)."""
    window, last = feedback_selectors.window_check(window, last_n)
    metric_names = charts.metric_names([version])
    return {
        "live_quality": feedback_selectors.version_quality(version=version, window=window, last_n=last),
        "live_window": window,
        "live_last_n": last,
        "model": version.registered_model,
        "version": version,
        "metrics": [(charts.metric_label(name), version.metrics[name]) for name in metric_names],
        "omitted_metrics": sorted((version.training_summary or {}).get("metrics_omitted", {}).items()),
        "gate_failures": transition_services.quality_gate_check(model_version=version),
        "transition_choices": [
            (stage, TRANSITION_LABELS[stage])
            for stage, sources in transition_services.ALLOWED_SOURCES.items()
            if version.stage in sources
        ],
        "figures": charts.version_figures(artifacts=version.artifacts),
        "transitions": list(selectors.stage_transition_list(model_version=version)),
        "mlflow_run_url": mlflow_gateway.tracking_ui_url(run_id=version.mlflow_run_id)
        if version.mlflow_run_id
        else None,
        "params": sorted((version.params or {}).items()),
    }


@require_GET
@login_required
@pages.domain_errors
def version_detail(request: HttpRequest, name: str, version: int) -> HttpResponse:
    """One version: lineage, holdout metrics and charts, and its live quality over `?window=`."""
    found = selectors.model_version_get(model_name=name, version=version)
    context = _version_detail_context(found, window=request.GET.get("window"), last_n=request.GET.get("last"))
    return render(request, "models_registry/version_detail.html", context)


@require_http_methods(["GET", "POST"])
@staff_required
@pages.domain_errors
def model_delete(request: HttpRequest, name: str) -> HttpResponse:
    """Delete a model without versions, after a confirmation page; one with versions is refused (409)."""
    registered = selectors.registered_model_get(name=name)
    if request.method == "POST":
        services.registered_model_delete(registered_model=registered, user=request.user)
        messages.success(request, f"Model {name} deleted.")
        return redirect("registry:model-list")
    return render(
        request,
        "models_registry/model_delete.html",
        {"model": registered, "webhook_count": registered.webhooks.count()},
        status=409 if registered.version_count else 200,
    )


@require_POST
@staff_required
@pages.domain_errors
def model_challenger(request: HttpRequest, name: str) -> HttpResponse:
    """Set the challenger mode and the canary's share from the model page."""
    registered = selectors.registered_model_get(name=name)
    form = ChallengerForm(request.POST)
    if form.is_valid():
        try:
            challenger_services.challenger_mode_set(
                registered_model=registered,
                mode=form.cleaned_data["mode"],
                canary_percent=form.cleaned_data["canary_percent"],
                user=request.user,
            )
        except (ValidationError, challenger_services.ChallengerUnavailable) as exc:
            for message in pages.refused(exc).messages:
                messages.error(request, message)
        else:
            mode = registered.get_challenger_mode_display().lower()
            share = f", {registered.canary_percent}% of production traffic" if mode == "canary" else ""
            messages.success(request, f"Challenger mode of {name}: {mode}{share}.")
    else:
        for message in pages.form_messages(form):
            messages.error(request, message)
    return redirect(reverse("registry:model-detail", args=[name]) + "#challenger")


@require_GET
@staff_required
@pages.domain_errors
def version_download(request: HttpRequest, name: str, version: int, kind: str) -> HttpResponse:
    found = selectors.model_version_get(model_name=name, version=version)
    if kind not in FILE_KINDS:
        raise Http404(f"Unknown file kind {kind!r}.")
    key_field, sha_field = FILE_KINDS[kind]
    key = getattr(found, key_field)
    if not key:
        raise Http404(f"{found} has no {kind} file.")
    response = downloads.stored_file_response(
        key=key,
        filename=f"{name}-v{version}.{kind}",
        content_type="application/octet-stream",
        missing=f"The stored {kind} file of {found} is missing.",
    )
    response["X-Checksum-SHA256"] = getattr(found, sha_field)
    return response
