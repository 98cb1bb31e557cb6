"""Staff pages for datasets: list and upload, a dataset's versions, one version's schema, and downloads."""

from __future__ import annotations

import logging

from django.contrib import messages
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from datasets import selectors, services
from datasets.forms import DatasetUploadForm
from datasets.models import DatasetVersion
from mlops_site import downloads, pages

logger = logging.getLogger(__name__)

SCHEMA_COLUMNS_PER_PAGE = 100


def _render_list(
    request: HttpRequest, form: DatasetUploadForm, *, errors: list[str] | None = None, status: int = 200
) -> HttpResponse:
    datasets = list(selectors.dataset_list())
    return render(
        request,
        "datasets/list.html",
        {
            "datasets": datasets,
            "form": form,
            "upload_errors": errors or [],
            "dataset_names": [d.name for d in datasets],
        },
        status=status,
    )


@require_GET
@pages.staff_required
def dataset_list(request: HttpRequest) -> HttpResponse:
    initial = {key: request.GET[key] for key in ("name", "parent") if request.GET.get(key)}
    return _render_list(request, DatasetUploadForm(initial=initial))


@require_POST
@pages.staff_required
def dataset_upload(request: HttpRequest) -> HttpResponse:
    form = DatasetUploadForm(request.POST, request.FILES)
    if not form.is_valid():
        return _render_list(request, form, errors=pages.form_messages(form), status=400)
    upload = form.cleaned_data["file"]
    try:
        version, created = services.dataset_version_create(
            name=form.cleaned_data["name"],
            file=upload,
            target_column=form.cleaned_data["target_column"] or None,
            created_by=request.user,
            description=form.cleaned_data["description"],
            parent=form.cleaned_data["parent"],
            original_filename=upload.name,
        )
    except Exception as exc:
        refusal = pages.refused(exc)
        return _render_list(request, form, errors=refusal.messages, status=refusal.status)
    if created:
        messages.success(request, f"Stored version {version.version} of {version.dataset.name}.")
    else:
        messages.info(
            request,
            f"This file is identical to version {version.version} of {version.dataset.name}; "
            "nothing new was stored.",
        )
    return redirect(_version_url(version))


@require_GET
@pages.staff_required
def dataset_detail(request: HttpRequest, name: str) -> HttpResponse:
    dataset = selectors.dataset_get(name=name)
    versions = list(selectors.dataset_version_list(dataset_name=name))
    return render(request, "datasets/detail.html", {"dataset": dataset, "versions": versions})


@require_GET
@pages.staff_required
def dataset_version_detail(request: HttpRequest, name: str, version: int) -> HttpResponse:
    found = selectors.dataset_version_get(dataset_name=name, version=version)
    # The widest dataset allowed (DATASET_MAX_COLUMNS) would make a page of megabytes: a page of columns.
    page = Paginator(found.columns, SCHEMA_COLUMNS_PER_PAGE).get_page(request.GET.get("page"))
    return render(
        request,
        "datasets/version_detail.html",
        {"version": found, "dataset": found.dataset, "columns": page.object_list, "page": page},
    )


@require_GET
@pages.staff_required
@pages.domain_errors
def dataset_version_download(request: HttpRequest, name: str, version: int) -> HttpResponse:
    return dataset_version_file_response(selectors.dataset_version_get(dataset_name=name, version=version))


def dataset_version_file_response(version: DatasetVersion) -> HttpResponse:
    """Stream the stored CSV file.

    Raises NotFound when the object is missing and StorageError when storage cannot be reached, both
    before the first byte is sent, so the page and the API still answer them through the one mapping.
    """
    return downloads.stored_file_response(
        key=version.object_key,
        filename=f"{version.dataset.name}-v{version.version}.csv",
        content_type="text/csv; charset=utf-8",
        size=version.size_bytes,
        missing="The stored file of this version is missing.",
    )


def _version_url(version: DatasetVersion) -> str:
    return reverse("datasets:version-detail", args=[version.dataset.name, version.version])
