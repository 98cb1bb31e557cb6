"""The closed loop's pages: a model's retraining page (its policy, retrainings and event log) and the staff
actions that page and the model page's retraining panel post to (save the policy, retrain now, approve)."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.dateparse import parse_datetime
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from mlops_site import pages
from mlops_site.pages import staff_required
from models_registry import selectors as registry_selectors
from models_registry import transition_services
from models_registry.models import RegisteredModel, Stage
from training import decision_services, policy_services, retraining_services, selectors
from training.forms import RetrainForm, RetrainingPolicyForm
from training.models import Retraining, RetrainingPolicy

EVENTS_PER_PAGE = 50
RETRAININGS_SHOWN = 50


def _back(request: HttpRequest, name: str) -> str:
    """Where a staff action returns: the model page's panel (`next=model`) or the retraining page."""
    if request.POST.get("next") == "model":
        return reverse("registry:model-detail", args=[name]) + "#retraining"
    return reverse("training:retraining", args=[name])


def _lineage(retraining: Retraining) -> dict[str, Any] | None:
    """The derived dataset version and what it was made of (datasets' lineage JSON, its times parsed)."""
    version = retraining.dataset_version
    if version is None:
        return None
    lineage = version.lineage or {}
    feedback = lineage.get("feedback") or {}
    return {
        "version": version,
        "parent": lineage.get("parent") or {},
        "parent_rows": lineage.get("parent_rows"),
        "feedback": feedback,
        "predicted_from": parse_datetime(feedback.get("predicted_from") or ""),
        "predicted_to": parse_datetime(feedback.get("predicted_to") or ""),
    }


def _page_context(
    request: HttpRequest,
    registered: RegisteredModel,
    *,
    policy: RetrainingPolicy,
    form: RetrainingPolicyForm | None = None,
) -> dict[str, Any]:
    retrainings = list(selectors.retraining_list(registered_model=registered)[:RETRAININGS_SHOWN])
    events = Paginator(selectors.retraining_event_list(registered_model=registered), EVENTS_PER_PAGE)
    return {
        "model": registered,
        "policy": policy,
        # Read here, not in the template: a template never queries.
        "policy_updated_by": policy.updated_by if policy.updated_by_id else None,
        "policy_lower_is_better": not policy_services.higher_is_better(
            task=registered.task, metric=policy.metric
        ),
        "policy_form": form or RetrainingPolicyForm.for_policy(policy, task=registered.task),
        "retrain_form": RetrainForm(),
        "retrainings": [{"retraining": r, "lineage": _lineage(r)} for r in retrainings],
        "retrainings_more": len(retrainings) == RETRAININGS_SHOWN,
        "events": events.get_page(request.GET.get("page")),
    }


@require_GET
@login_required
@pages.domain_errors
def retraining_page(request: HttpRequest, name: str) -> HttpResponse:
    """The model's retraining policy (a form for staff), its retrainings with their figures, the event log."""
    registered = registry_selectors.registered_model_get(name=name)
    policy = policy_services.retraining_policy_get(registered_model=registered)
    return render(request, "training/retraining.html", _page_context(request, registered, policy=policy))


@require_POST
@staff_required
@pages.domain_errors
def retraining_policy_save(request: HttpRequest, name: str) -> HttpResponse:
    registered = registry_selectors.registered_model_get(name=name)
    policy = policy_services.retraining_policy_get(registered_model=registered)
    form = RetrainingPolicyForm.for_policy(policy, task=registered.task, data=request.POST)
    if form.is_valid():
        try:
            policy_services.retraining_policy_set(
                registered_model=registered, data=form.cleaned_data, user=request.user
            )
        except ValidationError as exc:
            form.add_service_errors(exc)
        else:
            messages.success(request, f"Retraining policy of {name} saved.")
            return redirect("training:retraining", name=name)
    context = _page_context(request, registered, policy=policy, form=form)
    return render(request, "training/retraining.html", context, status=400)


@require_POST
@staff_required
@pages.domain_errors
def retraining_retrain(request: HttpRequest, name: str) -> HttpResponse:
    """Retrain now: a guardrail's refusal comes back as an error message, and nothing is started."""
    registered = registry_selectors.registered_model_get(name=name)
    form = RetrainForm(request.POST)
    if not form.is_valid():
        for message in pages.form_messages(form):
            messages.error(request, message)
        return redirect(_back(request, name))
    reason = form.cleaned_data["reason"].strip() or f"{request.user.get_username()} clicked Retrain now."
    try:
        retraining = retraining_services.retraining_start(
            registered_model=registered, trigger=Retraining.Trigger.MANUAL, reason=reason, user=request.user
        )
    except ValidationError as exc:
        for message in pages.refused(exc).messages:
            messages.error(request, message)
    else:
        messages.success(request, f"Retraining {retraining.pk} of {name} started.")
    return redirect(_back(request, name))


@require_http_methods(["GET", "POST"])
@staff_required
@pages.domain_errors
def retraining_approve(request: HttpRequest, retraining_id: int) -> HttpResponse:
    """Promote a challenger awaiting approval. A confirmation page first (GET, or a POST without
    `confirm`) shows what serves production now and after, and the quality gate, which still applies."""
    retraining = selectors.retraining_get(retraining_id=retraining_id)
    name = retraining.registered_model.name
    unconfirmed = request.method == "GET" or request.POST.get("confirm") != "on"
    # One that no longer awaits approval goes on to the service, which says why it cannot be approved.
    if unconfirmed and retraining.decision == Retraining.Decision.AWAITING_APPROVAL:
        try:
            if retraining.challenger is None:
                raise ValidationError(f"Retraining {retraining.pk} has no challenger.")
            change = transition_services.transition_preview(
                model_version=retraining.challenger, to_stage=Stage.PRODUCTION
            )
        except ValidationError as exc:
            for message in pages.refused(exc).messages:
                messages.error(request, message)
            return redirect(_back(request, name))
        context = {
            "retraining": retraining,
            "change": change,
            "next": request.POST.get("next") or request.GET.get("next") or "",
            "back": _back(request, name),
        }
        return render(request, "training/approve_confirm.html", context)
    try:
        decision_services.retraining_approve(retraining=retraining, user=request.user)
    except ValidationError as exc:
        for message in pages.refused(exc).messages:
            messages.error(request, message)
    else:
        messages.success(
            request, f"{retraining.challenger} promoted to production (retraining {retraining.pk})."
        )
    return redirect(_back(request, name))
