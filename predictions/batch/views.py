"""Batch prediction pages: the upload form, one's jobs, a job's live progress and its downloads."""

from __future__ import annotations

import datetime as dt
import os
from typing import Any

from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import (
    Http404,
    HttpRequest,
    HttpResponse,
    HttpResponseBase,
    JsonResponse,
)
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_http_methods

from mlops_site import downloads, errors, pages, storage
from predictions import selectors
from predictions.batch import services as batch_services
from predictions.forms import BatchUploadForm
from predictions.models import BatchPredictionJob

JOBS_PAGE_SIZE = 25
RESULT = "result"
ERRORS = "errors"


def _when(moment: dt.datetime | None) -> str | None:
    return timezone.localtime(moment).strftime("%Y-%m-%d %H:%M:%S") if moment else None


def job_state(job: BatchPredictionJob) -> dict[str, Any]:
    """What the progress panel shows; the JSON status endpoint returns exactly this."""
    done = job.status == BatchPredictionJob.Status.SUCCEEDED
    return {
        "id": str(job.uuid),
        "status": job.status,
        "status_label": job.get_status_display(),
        "is_terminal": job.is_terminal,
        "progress": job.progress,
        "rows_total": job.rows_total,
        "rows_done": job.rows_done,
        "rows_failed": job.rows_failed,
        "rows_predicted": job.rows_predicted,
        "error_message": job.error_message,
        "attempts": job.attempts,
        "started_at": _when(job.started_at),
        "finished_at": _when(job.finished_at),
        "result_url": reverse("predictions:batch-result", args=[job.uuid]) if done else None,
        "errors_url": reverse("predictions:batch-errors", args=[job.uuid]) if done else None,
    }


def _render_new(
    request: HttpRequest, *, name: str, form: BatchUploadForm | None, problems: list[str], status: int = 200
) -> HttpResponse:
    return render(
        request,
        "predictions/batch_new.html",
        {
            "model_name": name,
            "form": form,
            "problems": problems,
            # A 5xx is the site's fault (storage down), not the file's: the page must not call it refused.
            "server_fault": status >= 500,
            "max_upload_mb": batch_services.max_upload_bytes() // (1024 * 1024),
        },
        status=status,
    )


@require_http_methods(["GET", "POST"])
@login_required
def batch_new(request: HttpRequest, name: str) -> HttpResponse:
    """Upload a CSV file to predict with one of the model's versions; success opens the job's page."""
    versions = selectors.model_versions_servable(registered_model_name=name)
    if not versions and not selectors.registered_model_exists(name=name):
        raise Http404(f"There is no registered model named '{name}'.")
    if request.method == "POST":
        form = BatchUploadForm(request.POST, request.FILES, versions=versions)
    else:
        form = BatchUploadForm(versions=versions)
    if request.method == "GET" or not form.is_valid():
        return _render_new(
            request, name=name, form=form, problems=[], status=200 if request.method == "GET" else 400
        )
    upload = form.cleaned_data["file"]
    try:
        job = batch_services.batch_prediction_start(
            registered_model_name=name,
            input_file=upload,
            filename=upload.name,
            requested_by=request.user,
            **form.target(),
        )
    except Exception as exc:
        refusal = pages.refused(exc)
        return _render_new(request, name=name, form=form, problems=refusal.messages, status=refusal.status)
    return redirect("predictions:batch-detail", job_uuid=job.uuid)


@require_GET
@login_required
def batch_list(request: HttpRequest) -> HttpResponse:
    """Your batch jobs (staff: everyone's), newest first."""
    paginator = Paginator(selectors.batch_job_list(user=request.user), JOBS_PAGE_SIZE)
    page = paginator.get_page(request.GET.get("page"))
    return render(
        request,
        "predictions/batch_list.html",
        {"page": page, "jobs": list(page.object_list), "show_user": request.user.is_staff},
    )


@require_GET
@login_required
def batch_detail(request: HttpRequest, job_uuid: Any) -> HttpResponse:
    """One job with a live progress bar; another user's job is a 404 (staff see all)."""
    job = selectors.batch_job_get(user=request.user, job_uuid=job_uuid)
    return render(request, "predictions/batch_detail.html", {"job": job, "state": job_state(job)})


@require_GET
@login_required
def batch_status(request: HttpRequest, job_uuid: Any) -> JsonResponse:
    """The progress panel's data, polled by the detail page."""
    job = selectors.batch_job_get(user=request.user, job_uuid=job_uuid)
    return JsonResponse(job_state(job))


def download_filename(job: BatchPredictionJob, kind: str) -> str:
    stem = os.path.splitext(job.original_filename)[0] or f"batch-{job.uuid}"
    return f"{stem}-{'predictions' if kind == RESULT else 'errors'}.csv"


def job_file_response(job: BatchPredictionJob, kind: str) -> HttpResponseBase:
    """The job's result or errors file, streamed from storage.

    Raises Conflict until the job has succeeded, NotFound when the file is missing, StorageError when
    storage fails: the page and the API answer each through the one mapping.
    """
    if job.status != BatchPredictionJob.Status.SUCCEEDED:
        raise errors.Conflict(f"The job is {job.status}; its files are ready once it has succeeded.")
    key = job.result_key if kind == RESULT else job.errors_key
    return downloads.stored_file_response(
        key=key,
        filename=download_filename(job, kind),
        content_type="text/csv; charset=utf-8",
        size=storage.size(key) if storage.exists(key) else None,
        missing="The file is missing from object storage.",
    )


@require_GET
@login_required
@pages.domain_errors
def batch_result(request: HttpRequest, job_uuid: Any) -> HttpResponseBase:
    return job_file_response(selectors.batch_job_get(user=request.user, job_uuid=job_uuid), RESULT)


@require_GET
@login_required
@pages.domain_errors
def batch_errors(request: HttpRequest, job_uuid: Any) -> HttpResponseBase:
    return job_file_response(selectors.batch_job_get(user=request.user, job_uuid=job_uuid), ERRORS)
