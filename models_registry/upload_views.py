"""Registry pages for uploading an externally trained model file as a new version (staff); the admin's upload
page shares the form handling."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.contrib.auth.models import AbstractBaseUser
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods

from mlops_site import pages
from mlops_site.pages import staff_required
from models_registry import selectors, upload_services
from models_registry.forms import ModelUploadForm
from models_registry.models import ModelVersion


def model_upload_initial(model_name: str) -> dict[str, Any]:
    """For "upload a new version of this model": its task and target, and its latest version's schema."""
    registered = selectors.registered_model_list().filter(name=model_name).first()
    if registered is None:
        return {"model_name": model_name} if model_name else {}
    initial: dict[str, Any] = {"model_name": registered.name, "target_column": registered.target_column}
    if registered.task:
        initial["task"] = registered.task
    latest = selectors.model_version_list(model_name=registered.name).first()
    if latest is not None:
        initial["copy_schema_from"] = str(latest.pk)
    return initial


def model_upload_submit(
    *, form: ModelUploadForm, user: AbstractBaseUser | None
) -> tuple[ModelVersion | None, list[str], int]:
    """Validate the form and register the file; (version, [], 302) or (None, every problem, HTTP status)."""
    if not form.is_valid():
        return None, pages.form_messages(form), 400
    data = form.cleaned_data
    try:
        version = upload_services.model_version_upload(
            registered_model_name=data["model_name"],
            file=data["file"],
            filename=data["file"].name,
            feature_schema=data["feature_schema"],
            task=data["task"],
            classes=data["classes"],
            target_column=data["target_column"],
            metrics=data["metrics"],
            description=data["description"],
            created_by=user,
        )
    except Exception as exc:
        refusal = pages.refused(exc)
        return None, refusal.messages, refusal.status
    return version, [], 302


@require_http_methods(["GET", "POST"])
@staff_required
def version_upload(request: HttpRequest) -> HttpResponse:
    if request.method == "GET":
        form = ModelUploadForm(initial=model_upload_initial(request.GET.get("model_name", "").strip()))
        errors: list[str] = []
        status = 200
    else:
        form = ModelUploadForm(request.POST, request.FILES)
        version, errors, status = model_upload_submit(form=form, user=request.user)
        if version is not None:
            name = version.registered_model.name
            messages.success(
                request, f"Registered {name} v{version.version} from {form.cleaned_data['file'].name}."
            )
            return redirect("registry:version-detail", name=name, version=version.version)
    return render(
        request,
        "models_registry/version_upload.html",
        {
            "form": form,
            "errors": errors,
            "model_names": list(selectors.registered_model_list().values_list("name", flat=True)),
        },
        status=status,
    )
