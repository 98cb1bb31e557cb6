"""Staff pages for datasets: list and upload, a dataset's versions, one version's schema, downloads, and the
deletion of what nothing uses."""

from __future__ import annotations

import logging
from typing import Any

from django.contrib import messages
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST

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
        {
            "version": found,
            "dataset": found.dataset,
            "columns": page.object_list,
            "page": page,
            "references": selectors.dataset_version_references(versions=[found]),
        },
    )


@require_http_methods(["GET", "POST"])
@pages.staff_required
@pages.domain_errors
def dataset_version_delete(request: HttpRequest, name: str, version: int) -> HttpResponse:
    """GET asks for confirmation (or says what uses the version); POST deletes it."""
    found = selectors.dataset_version_get(dataset_name=name, version=version)
    dataset = selectors.dataset_get(name=name)
    context = {
        "title": f"Delete {name} v{version}",
        "subject": f"version {version} of {name}",
        "deleted": [
            f"{name} v{version}: {found.row_count:,} rows, {found.original_filename or 'no file name'}"
        ],
        "note": f"It is the last version of {name}, so the dataset is deleted with it."
        if dataset.version_count == 1
        else "",
        "action_url": reverse("datasets:version-delete", args=[name, version]),
        "cancel_url": _version_url(found),
    }
    if request.method == "GET":
        references = selectors.dataset_version_references(versions=[found])
        refusal = selectors.deletion_refusal(label=f"{name} v{version}", references=references)
        return _render_delete(request, context, refusal=refusal)
    try:
        deletion = services.dataset_version_delete(version=found)
    except services.DatasetInUse as exc:
        return _render_delete(request, context, refusal=exc.detail, status=exc.status)
    if deletion.dataset_deleted:
        messages.success(
            request, f"Deleted {name} v{version}, its last version, and with it the dataset {name}."
        )
        return redirect("datasets:list")
    messages.success(request, f"Deleted version {version} of {name}.")
    return redirect("datasets:detail", name=name)


@require_http_methods(["GET", "POST"])
@pages.staff_required
@pages.domain_errors
def dataset_delete(request: HttpRequest, name: str) -> HttpResponse:
    """GET asks for confirmation (or says what uses its versions); POST deletes the dataset and them."""
    dataset = selectors.dataset_get(name=name)
    versions = list(selectors.dataset_version_list(dataset_name=name))
    context = {
        "title": f"Delete the dataset {name}",
        "subject": f"the dataset {name}" + (" with every version" if versions else ""),
        "deleted": [f"{name} v{v.version}: {v.row_count:,} rows" for v in versions],
        "note": "",
        "action_url": reverse("datasets:delete", args=[name]),
        "cancel_url": reverse("datasets:detail", args=[name]),
    }
    if request.method == "GET":
        references = selectors.dataset_version_references(versions=versions, among=versions)
        refusal = selectors.deletion_refusal(label=f"The dataset {name}", references=references)
        return _render_delete(request, context, refusal=refusal)
    try:
        services.dataset_delete(dataset=dataset)
    except services.DatasetInUse as exc:
        return _render_delete(request, context, refusal=exc.detail, status=exc.status)
    messages.success(request, f"Deleted the dataset {name} and its {len(versions)} version(s).")
    return redirect("datasets:list")


def _render_delete(
    request: HttpRequest, context: dict[str, Any], *, refusal: str, status: int = 200
) -> HttpResponse:
    return render(request, "datasets/delete_confirm.html", {**context, "refusal": refusal}, status=status)


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
