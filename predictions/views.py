"""Prediction pages: the models one can predict with, the predict form, and the history of predictions."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET, require_http_methods

from feedback import selectors as feedback_selectors
from mlops_site import pages, pagination
from mlops_site.errors import Invalid, problem
from models_registry import selectors as registry_selectors
from models_registry.models import ModelVersion
from predictions import selectors, services
from predictions.forms import PredictForm, PredictionFilterForm
from predictions.models import Channel, Prediction

HISTORY_PAGE_SIZE = 25


def _chart_data(prediction: Prediction) -> dict[str, Any] | None:
    """Classes and probabilities for the plotly bar chart, in the version's class order."""
    if not prediction.probabilities:
        return None
    classes = [str(c) for c in (prediction.model_version.classes or prediction.probabilities)]
    classes = [c for c in classes if c in prediction.probabilities]
    return {
        "classes": classes,
        "probabilities": [prediction.probabilities[c] for c in classes],
        "predicted": str(prediction.prediction),
    }


@require_GET
@login_required
def predict_index(request: HttpRequest) -> HttpResponse:
    return render(
        request, "predictions/predict_index.html", {"versions": selectors.production_version_list()}
    )


def _render_predict(
    request: HttpRequest,
    *,
    name: str,
    version: ModelVersion,
    form: PredictForm,
    examples: int,
    example: int | None = None,
    result: Prediction | None = None,
    status: int = 200,
) -> HttpResponse:
    return render(
        request,
        "predictions/predict.html",
        {
            "model_name": name,
            "version": version,
            "form": form,
            "result": result,
            "chart": _chart_data(result) if result is not None else None,
            "examples": examples,
            # The next example to offer: the first, then each in turn.
            "next_example": None if not examples else (0 if example is None else (example + 1) % examples),
        },
        status=status,
    )


@require_http_methods(["GET", "POST"])
@login_required
@pages.domain_errors
def predict(request: HttpRequest, name: str) -> HttpResponse:
    """The form of the production version's features; a POST predicts one row and shows the result."""
    version = selectors.model_version_resolve(registered_model_name=name)
    examples = registry_selectors.version_examples(version)
    if request.method == "GET":
        example = _example_index(request.GET.get("example"), len(examples))
        form = PredictForm(
            feature_schema=version.feature_schema, example=None if example is None else examples[example]
        )
        return _render_predict(
            request, name=name, version=version, form=form, examples=len(examples), example=example
        )
    form = PredictForm(request.POST, feature_schema=version.feature_schema)
    if not form.is_valid():
        return _render_predict(request, name=name, version=version, form=form, examples=len(examples))
    try:
        outcome = services.prediction_make(
            registered_model_name=name, rows=[form.row()], user=request.user, channel=Channel.PAGE
        )
    except Exception as exc:
        refusal = pages.refused(exc)
        form.errors_add(refusal.errors or [problem(refusal.detail)])
        return _render_predict(
            request, name=name, version=version, form=form, examples=len(examples), status=refusal.status
        )
    (result,) = outcome.predictions
    return _render_predict(
        request, name=name, version=outcome.model_version, form=form, examples=len(examples), result=result
    )


def _example_index(text: str | None, count: int) -> int | None:
    """The `example` query parameter: which of the version's example rows fills the form."""
    if text is None:
        return None
    if count == 0:
        raise Invalid("This model version has no example rows to fill the form with.")
    if not text.isascii() or not text.isdigit() or int(text) >= count:
        raise Invalid(f"example must be a whole number from 0 to {count - 1}, not {text[:40]!r}.")
    return int(text)


@require_GET
@login_required
@pages.domain_errors
def prediction_list(request: HttpRequest) -> HttpResponse:
    """Your predictions (staff: everyone's), filtered by model and date, newest first, paged by a signed
    cursor (a malformed one is a 400 page naming it)."""
    # Only the filters bind the form: `?cursor=` alone is still the unfiltered history.
    filter_data = {k: v for k, v in request.GET.items() if k in PredictionFilterForm.base_fields}
    form = PredictionFilterForm(filter_data or None, model_names=selectors.model_name_list())
    valid = form.is_valid() if form.is_bound else True
    filters = form.filters() if form.is_bound and valid else {}
    # Keyset pages: page 6,000 costs what page 1 does. An old `?page=` link shows the newest page.
    page = pagination.keyset_page(
        selectors.prediction_list(user=request.user, **filters),
        cursor=request.GET.get(pagination.CURSOR_PARAM),
        size=HISTORY_PAGE_SIZE,
    )
    query = request.GET.copy()
    for name in ("page", pagination.CURSOR_PARAM):
        query.pop(name, None)
    return render(
        request,
        "predictions/prediction_list.html",
        {
            "form": form,
            "page": page,
            "predictions": page.items,
            "querystring": query.urlencode(),
            "show_user": request.user.is_staff,
            "here": request.get_full_path(),
        },
        status=200 if valid else 400,
    )


@require_GET
@login_required
def prediction_detail(request: HttpRequest, prediction_id: int) -> HttpResponse:
    """One prediction and its true outcome with the outcome's history; someone else's is a 404 (staff see
    all), so guessing ids reveals nothing."""
    prediction = selectors.prediction_get(user=request.user, prediction_id=prediction_id)
    feedback = feedback_selectors.feedback_of(prediction=prediction)
    warnings_of: dict[str, list[str]] = {}
    for warning in prediction.warnings:
        warnings_of.setdefault(warning.get("field") or "", []).append(warning["message"])
    schema_names = [c["name"] for c in prediction.model_version.feature_schema]
    names = schema_names + [n for n in prediction.inputs if n not in schema_names]
    inputs = [
        {"name": n, "value": prediction.inputs.get(n), "warnings": warnings_of.get(n, [])}
        for n in names
        if n in prediction.inputs
    ]
    return render(
        request,
        "predictions/prediction_detail.html",
        {
            "prediction": prediction,
            "inputs": inputs,
            "chart": _chart_data(prediction),
            "show_user": request.user.is_staff,
            "feedback": feedback,
            "feedback_changes": list(feedback.changes.all()) if feedback is not None else [],
        },
    )
