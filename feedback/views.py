"""Pages of the feedback app: giving a prediction its true outcome, and the staff label queue."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_POST

from feedback import selectors, services
from feedback.forms import FeedbackForm
from feedback.models import Source
from mlops_site import pages
from mlops_site.pages import staff_required
from models_registry import selectors as registry_selectors
from predictions import selectors as prediction_selectors

QUEUE_PAGE_SIZE = 25
#: Inputs shown per row of the label queue; the prediction's page has them all.
QUEUE_INPUTS_SHOWN = 4
SAVED_MESSAGES = {
    "created": "Feedback saved.",
    "unchanged": "Feedback unchanged.",
    "updated": "Feedback updated; the previous outcome is kept in the history.",
    "commented": "Comment updated.",
}


def _safe_next(request: HttpRequest, url: Any) -> str | None:
    """`url` when it points back into this site, else None: a form must not redirect elsewhere."""
    if isinstance(url, str) and url_has_allowed_host_and_scheme(
        url, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return url
    return None


@require_POST
@login_required
@pages.domain_errors
def feedback_give(request: HttpRequest, prediction_id: int) -> HttpResponse:
    """Store the posted outcome and go back where the form was; a refusal shows the form again (400).

    Someone else's prediction is a 404, exactly as reading it is.
    """
    prediction = prediction_selectors.prediction_get(user=request.user, prediction_id=prediction_id)
    form = FeedbackForm(request.POST)
    back = _safe_next(request, request.POST.get("next"))
    if not form.is_valid():
        return _refused(
            request, prediction=prediction, form=form, problems=pages.form_messages(form), back=back
        )
    try:
        stored = services.feedback_give(
            prediction_id=prediction.pk, user=request.user, source=Source.PAGE, data=form.outcome()
        )
    except services.FeedbackInvalid as exc:
        return _refused(request, prediction=prediction, form=form, problems=exc.problems, back=back)
    level = messages.INFO if stored.status == "unchanged" else messages.SUCCESS
    said = "commented" if stored.status == "updated" and not stored.outcome_changed else stored.status
    messages.add_message(request, level, SAVED_MESSAGES[said])
    return redirect(back or reverse("predictions:detail", args=[prediction.pk]))


def _refused(
    request: HttpRequest, *, prediction: Any, form: FeedbackForm, problems: list[str], back: str | None
) -> HttpResponse:
    return render(
        request,
        "feedback/give.html",
        {
            "prediction": prediction,
            "problems": problems,
            "posted": form.data,
            "back": back,
        },
        status=400,
    )


def _inputs_summary(prediction: Any) -> list[tuple[str, Any]]:
    names = [column["name"] for column in prediction.model_version.feature_schema or []]
    inputs = prediction.inputs or {}
    ordered = [n for n in names if n in inputs] + [n for n in inputs if n not in names]
    return [(name, inputs[name]) for name in ordered]


@require_GET
@staff_required
@pages.domain_errors
def label_queue(request: HttpRequest, name: str) -> HttpResponse:
    """A version's predictions without an outcome, least confident first, each with one-click labels."""
    registered = registry_selectors.registered_model_get(name=name)
    version = selectors.label_queue_version(registered_model=registered, version=request.GET.get("version"))
    paginator = Paginator(selectors.label_queue(version=version), QUEUE_PAGE_SIZE)
    page = paginator.get_page(request.GET.get("page"))
    rows = []
    for prediction in page.object_list:
        inputs = _inputs_summary(prediction)
        rows.append(
            {
                "prediction": prediction,
                "inputs": inputs[:QUEUE_INPUTS_SHOWN],
                "inputs_hidden": max(0, len(inputs) - QUEUE_INPUTS_SHOWN),
            }
        )
    query = request.GET.copy()
    query.pop("page", None)
    return render(
        request,
        "feedback/label_queue.html",
        {
            "model": registered,
            "version": version,
            "versions": list(registry_selectors.model_version_list(model_name=registered.name)),
            "page": page,
            "rows": rows,
            "querystring": query.urlencode(),
            "here": request.get_full_path(),
        },
    )
