"""Feedback import pages (staff only): the upload form, the imports, one import's live progress and its
errors file."""

from __future__ import annotations

import datetime as dt
import os
from typing import Any

from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse, HttpResponseBase, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_http_methods

from feedback import selectors
from feedback.imports import services as import_services
from feedback.imports.forms import FeedbackImportForm
from feedback.models import FeedbackImport
from mlops_site import downloads, errors, pages, storage
from predictions import selectors as prediction_selectors

IMPORTS_PAGE_SIZE = 25


def _when(moment: dt.datetime | None) -> str | None:
    return timezone.localtime(moment).strftime("%Y-%m-%d %H:%M:%S") if moment else None


def import_state(job: FeedbackImport) -> dict[str, Any]:
    """What the progress panel shows; the JSON status endpoint returns exactly this."""
    return {
        "id": str(job.uuid),
        "status": job.status,
        "status_label": job.get_status_display(),
        "is_terminal": job.is_terminal,
        "progress": job.progress,
        "rows_total": job.rows_total,
        "rows_done": job.rows_done,
        "rows_failed": job.rows_failed,
        "rows_created": job.rows_created,
        "rows_updated": job.rows_updated,
        "rows_unchanged": job.rows_unchanged,
        "error_message": job.error_message,
        "attempts": job.attempts,
        "started_at": _when(job.started_at),
        "finished_at": _when(job.finished_at),
        "errors_url": (
            reverse("feedback:import-errors", args=[job.uuid])
            if import_services.errors_file_ready(job)
            else None
        ),
    }


def _render_new(
    request: HttpRequest, *, form: FeedbackImportForm, problems: list[str], status: int = 200
) -> HttpResponse:
    return render(
        request,
        "feedback/import_new.html",
        {
            "form": form,
            "problems": problems,
            # A 5xx is the site's fault (storage down), not the file's: the page must not call it refused.
            "server_fault": status >= 500,
            "max_upload_mb": import_services.max_upload_bytes() // (1024 * 1024),
        },
        status=status,
    )


@require_http_methods(["GET", "POST"])
@pages.staff_required
def import_new(request: HttpRequest) -> HttpResponse:
    """Upload a CSV file of true outcomes (`?model=NAME` picks the model); success opens the import's page."""
    names = prediction_selectors.model_name_list()
    if request.method == "GET":
        chosen = request.GET.get("model", "")
        form = FeedbackImportForm(initial={"model": chosen if chosen in names else ""}, model_names=names)
        return _render_new(request, form=form, problems=[])
    form = FeedbackImportForm(request.POST, request.FILES, model_names=names)
    if not form.is_valid():
        return _render_new(request, form=form, problems=[], status=400)
    upload = form.cleaned_data["file"]
    try:
        job = import_services.feedback_import_start(
            user=request.user,
            file=upload,
            filename=upload.name,
            registered_model_name=form.cleaned_data["model"] or None,
        )
    except Exception as exc:
        refusal = pages.refused(exc)
        return _render_new(request, form=form, problems=refusal.messages, status=refusal.status)
    return redirect("feedback:import-detail", import_uuid=job.uuid)


@require_GET
@pages.staff_required
def import_list(request: HttpRequest) -> HttpResponse:
    """Every feedback import, newest first."""
    paginator = Paginator(selectors.feedback_import_list(user=request.user), IMPORTS_PAGE_SIZE)
    page = paginator.get_page(request.GET.get("page"))
    return render(request, "feedback/import_list.html", {"page": page, "imports": list(page.object_list)})


@require_GET
@pages.staff_required
def import_detail(request: HttpRequest, import_uuid: Any) -> HttpResponse:
    """One import with a live progress bar and its counts."""
    job = selectors.feedback_import_get(user=request.user, import_uuid=import_uuid)
    return render(request, "feedback/import_detail.html", {"job": job, "state": import_state(job)})


@require_GET
@pages.staff_required
def import_status(request: HttpRequest, import_uuid: Any) -> JsonResponse:
    """The progress panel's data, polled by the detail page."""
    job = selectors.feedback_import_get(user=request.user, import_uuid=import_uuid)
    return JsonResponse(import_state(job))


def errors_file_response(job: FeedbackImport) -> HttpResponseBase:
    """The import's errors file, streamed from storage.

    Raises Conflict until the import has succeeded with a failed row, NotFound when the file is missing,
    StorageError when storage fails: the page and the API answer each through the one mapping.
    """
    if not import_services.errors_file_ready(job):
        if job.status != FeedbackImport.Status.SUCCEEDED:
            raise errors.Conflict(
                f"The import is {job.status}; its errors file is ready once it has succeeded."
            )
        raise errors.Conflict("Every row of this import was valid: there is no errors file.")
    stem = os.path.splitext(job.original_filename)[0] or f"feedback-{job.uuid}"
    return downloads.stored_file_response(
        key=job.errors_key,
        filename=f"{stem}-errors.csv",
        content_type="text/csv; charset=utf-8",
        size=storage.size(job.errors_key) if storage.exists(job.errors_key) else None,
        missing="The errors file is missing from object storage.",
    )


@require_GET
@pages.staff_required
@pages.domain_errors
def import_errors(request: HttpRequest, import_uuid: Any) -> HttpResponseBase:
    return errors_file_response(selectors.feedback_import_get(user=request.user, import_uuid=import_uuid))
