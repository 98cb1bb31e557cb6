"""Django admin for training runs, and the dataset-version action that starts runs; both call the services."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.html import format_html
from django.utils.safestring import SafeString

from datasets.models import DatasetVersion
from mlops_site.admin import ReadOnlyAdmin
from training import services
from training.forms import algorithm_choices
from training.models import TrainingRun


@admin.register(TrainingRun)
class TrainingRunAdmin(ReadOnlyAdmin):
    list_display = [
        "id",
        "registered_model",
        "dataset_version",
        "algorithm",
        "status",
        "progress",
        "created_by",
        "created_at",
        "duration_text",
    ]
    list_select_related = ["registered_model", "dataset_version__dataset", "created_by"]
    list_filter = ["status", "algorithm", "registered_model"]
    search_fields = ["registered_model__name", "error_message", "=id"]
    fields = [
        "registered_model",
        "dataset_version",
        "target_column",
        "task",
        "algorithm",
        "params",
        "seed",
        "test_size",
        "status",
        "progress",
        "progress_message",
        "error_message",
        "attempts",
        "mlflow_run_id",
        "key",
        "created_by",
        "created_at",
        "started_at",
        "finished_at",
        "duration_text",
        "page_link",
    ]
    readonly_fields = fields
    actions = ["retry_failed_runs"]

    @admin.display(description="Duration")
    def duration_text(self, obj: TrainingRun) -> str:
        return f"{obj.duration.total_seconds():.1f} s" if obj.duration is not None else "—"

    @admin.display(description="Page")
    def page_link(self, obj: TrainingRun) -> SafeString:
        return format_html('<a href="{}">Open the run page</a>', reverse("training:detail", args=[obj.pk]))

    @admin.action(description="Retry failed runs (as new runs)")
    def retry_failed_runs(self, request: HttpRequest, queryset: QuerySet[TrainingRun]) -> None:
        for run in queryset.select_related("registered_model", "dataset_version").order_by("pk"):
            try:
                retried = services.training_run_retry(training_run=run, created_by=request.user)
            except ValidationError as exc:
                self.message_user(request, " ".join(exc.messages), messages.ERROR)
            else:
                self.message_user(
                    request, f"Run {run.pk} queued again as run {retried.pk}.", messages.SUCCESS
                )


class TrainOnVersionsForm(forms.Form):
    model_name = forms.CharField(max_length=64, help_text="A new name registers a new model.")
    algorithm = forms.ChoiceField(choices=algorithm_choices)


@admin.action(description="Train a model on the selected versions")
def train_on_dataset_versions(
    modeladmin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet[DatasetVersion]
) -> HttpResponse | None:
    """First an intermediate page asks for the model name and algorithm; then one run per version."""
    versions = list(queryset.select_related("dataset").order_by("dataset__name", "version"))
    form = TrainOnVersionsForm(request.POST if "apply" in request.POST else None)
    if "apply" in request.POST and form.is_valid():
        task, _, algorithm = form.cleaned_data["algorithm"].partition(":")
        for version in versions:
            try:
                run = services.training_run_create(
                    dataset_version=version,
                    model_name=form.cleaned_data["model_name"],
                    algorithm=algorithm,
                    params={},
                    created_by=request.user,
                    task=None if task == "infer" else task,
                )
            except ValidationError as exc:
                modeladmin.message_user(request, f"{version}: {' '.join(exc.messages)}", messages.ERROR)
            else:
                url = reverse("training:detail", args=[run.pk])
                modeladmin.message_user(
                    request, format_html('{}: <a href="{}">training run {}</a> queued.', version, url, run.pk)
                )
        return None
    return TemplateResponse(
        request,
        "training/admin_train_form.html",
        {
            **modeladmin.admin_site.each_context(request),
            "title": "Train a model on dataset versions",
            "opts": modeladmin.model._meta,
            "form": form,
            "versions": versions,
            "action_name": "train_on_dataset_versions",
            "action_checkbox_name": admin.helpers.ACTION_CHECKBOX_NAME,
        },
    )


# Training depends on datasets, not the other way round: the action joins the dataset-version admin that
# the datasets app registered (INSTALLED_APPS lists datasets first, so it is registered by now).
_dataset_version_admin = admin.site.get_model_admin(DatasetVersion)
_dataset_version_admin.actions = [*(_dataset_version_admin.actions or []), train_on_dataset_versions]
