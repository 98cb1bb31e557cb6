"""Registry pages that move production: a version's stage transition and a model's rollback, each applied
only from its confirmation page (staff)."""

from __future__ import annotations

from collections.abc import Callable

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_http_methods

from mlops_site import pages
from mlops_site.pages import staff_required
from models_registry import selectors, transition_services
from models_registry.forms import RollbackForm, TransitionForm


def _confirmation(
    request: HttpRequest,
    *,
    preview: Callable[[], transition_services.ProductionChange],
    form: TransitionForm | RollbackForm,
    action_url: str,
    back: str,
    to_stage: str = "",
    next_page: str = "",
    errors: list[str] | None = None,
    status: int = 200,
) -> HttpResponse:
    """The page that shows what a production change does (now, after, the gate) and applies it on POST;
    back to `back` with the reason when `preview` finds the change impossible."""
    try:
        change = preview()
    except ValidationError as exc:
        for message in pages.refused(exc).messages:
            messages.error(request, message)
        return redirect(back)
    reason = form.cleaned_data.get("reason", "") if form.is_bound and form.is_valid() else ""
    return render(
        request,
        "models_registry/confirm_production.html",
        {
            "change": change,
            "model": change.registered_model,
            "action_url": action_url,
            "back": back,
            "to_stage": to_stage,
            "next": next_page,
            "reason": reason,
            "errors": errors or [],
        },
        status=status,
    )


def _refusal(exc: ValidationError) -> tuple[list[str], int]:
    """What the confirmation page says about a refused change, and its status."""
    if isinstance(exc, transition_services.QualityGateError):
        # The page lists the failing metrics itself.
        return [
            "The quality gate refuses this version: it can go ahead only when forced, with a reason."
        ], 409
    refusal = pages.refused(exc)
    return refusal.messages, refusal.status


@require_http_methods(["GET", "POST"])
@staff_required
@pages.domain_errors
def version_transition(request: HttpRequest, name: str, version: int) -> HttpResponse:
    """Staging moves apply at once; a move that changes production first shows its confirmation page
    (on GET, or a POST without `confirm`) and applies on the confirming POST."""
    found = selectors.model_version_get(model_name=name, version=version)
    data = request.POST if request.method == "POST" else request.GET
    next_page = "version" if data.get("next") == "version" else ""
    back = (
        reverse("registry:version-detail", args=[name, version])
        if next_page
        else reverse("registry:model-detail", args=[name])
    )
    form = TransitionForm(data)
    if not form.is_valid():
        for message in pages.form_messages(form):
            messages.error(request, message)
        return redirect(back)
    to_stage = form.cleaned_data["to_stage"]
    asks = request.method == "GET" or (
        transition_services.transition_changes_production(model_version=found, to_stage=to_stage)
        and not form.cleaned_data["confirm"]
    )

    def confirmation(errors: list[str] | None = None, status: int = 200) -> HttpResponse:
        return _confirmation(
            request,
            preview=lambda: transition_services.transition_preview(model_version=found, to_stage=to_stage),
            form=form,
            action_url=reverse("registry:version-transition", args=[name, version]),
            back=back,
            to_stage=to_stage,
            next_page=next_page,
            errors=errors,
            status=status,
        )

    if asks:
        return confirmation()
    try:
        transition_services.model_version_transition(
            model_version=found,
            to_stage=to_stage,
            user=request.user,
            reason=form.cleaned_data["reason"],
            force=form.cleaned_data["force"],
        )
    except ValidationError as exc:
        # The gate refused (thresholds changed since the page was shown) or a forced move lacks its
        # reason: the confirmation page again, with the refusal and the way to force it.
        return confirmation(*_refusal(exc))
    stage_label = "archived" if to_stage == "archived" else f"promoted to {to_stage}"
    messages.success(request, f"{name} v{version} {stage_label}.")
    return redirect(back)


@require_http_methods(["GET", "POST"])
@staff_required
@pages.domain_errors
def model_rollback(request: HttpRequest, name: str) -> HttpResponse:
    """The rollback's confirmation page (GET, or a POST without `confirm`); the confirming POST applies it."""
    registered = selectors.registered_model_get(name=name)
    back = reverse("registry:model-detail", args=[name])
    form = RollbackForm(request.POST if request.method == "POST" else None)
    if form.is_bound and not form.is_valid():
        for message in pages.form_messages(form):
            messages.error(request, message)
        return redirect(back)

    def confirmation(errors: list[str] | None = None, status: int = 200) -> HttpResponse:
        return _confirmation(
            request,
            preview=lambda: transition_services.rollback_preview(registered_model=registered),
            form=form,
            action_url=reverse("registry:model-rollback", args=[name]),
            back=back,
            errors=errors,
            status=status,
        )

    if not form.is_bound or not form.cleaned_data["confirm"]:
        return confirmation()
    try:
        target = transition_services.model_version_rollback(
            registered_model=registered,
            user=request.user,
            reason=form.cleaned_data["reason"],
            force=form.cleaned_data["force"],
        )
    except ValidationError as exc:
        return confirmation(*_refusal(exc))
    messages.success(request, f"{name} v{target.version} is in production again.")
    return redirect(back)
