"""Django admin for training runs and the closed loop (policies, retrainings, their events), and the actions
other apps' admins gain here (train on dataset versions, retrain registered models); all call the services."""

from __future__ import annotations

from typing import Any

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
from mlops_site.admin import ReadOnlyAdmin, preview_row, production_confirmation
from models_registry import transition_services
from models_registry.models import RegisteredModel, Stage
from training import decision_services, policy_services, retraining_services, services
from training.forms import RetrainingPolicyForm, algorithm_choices
from training.models import Retraining, RetrainingEvent, RetrainingPolicy, TrainingRun


@admin.register(TrainingRun)
class TrainingRunAdmin(ReadOnlyAdmin):
    list_display = [
        "id",
        "model_name",
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
    search_fields = ["model_name", "error_message", "=id"]
    fields = [
        "model_name",
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


def _policy_data(cleaned: dict) -> dict:
    return {name: cleaned[name] for name in policy_services.FIELDS if name in cleaned}


class RetrainingPolicyAdminForm(forms.ModelForm):
    class Meta:
        model = RetrainingPolicy
        fields = ["registered_model", *policy_services.FIELDS]
        help_texts = {name: field.help_text for name, field in RetrainingPolicyForm.base_fields.items()}

    def clean(self) -> dict:
        """The policy service's own checks, so that its refusals show on the form's fields."""
        cleaned = super().clean()
        registered = cleaned.get("registered_model") or (
            self.instance.registered_model if self.instance.registered_model_id else None
        )
        if registered is None:
            return cleaned
        try:
            policy_services.retraining_policy_check(registered_model=registered, data=_policy_data(cleaned))
        except ValidationError as exc:
            for name, problems in exc.message_dict.items():
                self.add_error(name if name in self.fields else None, problems)
        return cleaned


@admin.register(RetrainingPolicy)
class RetrainingPolicyAdmin(admin.ModelAdmin):
    form = RetrainingPolicyAdminForm
    list_display = [
        "registered_model",
        "enabled",
        "metric",
        "threshold",
        "window",
        "auto_promote",
        "updated_by",
        "updated_at",
    ]
    list_select_related = ["registered_model", "updated_by"]
    list_filter = ["enabled", "auto_promote", "metric"]
    search_fields = ["registered_model__name"]

    def get_readonly_fields(self, request: HttpRequest, obj: RetrainingPolicy | None = None) -> list[str]:
        return ["registered_model", "updated_by", "updated_at"] if obj else ["updated_by", "updated_at"]

    def save_model(
        self, request: HttpRequest, obj: RetrainingPolicy, form: forms.ModelForm, change: bool
    ) -> None:
        saved = policy_services.retraining_policy_set(
            registered_model=obj.registered_model, data=_policy_data(form.cleaned_data), user=request.user
        )
        # The admin goes on with `obj` (its log entry, the redirect): make it the row the service saved.
        obj.pk, obj.updated_by, obj.updated_at = saved.pk, saved.updated_by, saved.updated_at
        obj._state.adding = False
        obj._state.db = saved._state.db


@admin.register(Retraining)
class RetrainingAdmin(ReadOnlyAdmin):
    list_display = [
        "id",
        "registered_model",
        "trigger",
        "status",
        "step",
        "decision",
        "challenger_version",
        "created_at",
    ]
    list_select_related = ["registered_model", "challenger"]
    list_filter = ["decision", "status", "trigger", "registered_model"]
    search_fields = ["registered_model__name", "reason", "=id"]
    fields = [
        "registered_model",
        "trigger",
        "reason",
        "requested_by",
        "status",
        "step",
        "decision",
        "champion",
        "challenger",
        "dataset_version",
        "training_run",
        "figures",
        "error_message",
        "attempts",
        "created_at",
        "started_at",
        "finished_at",
        "decided_at",
        "page_link",
    ]
    readonly_fields = fields
    actions = ["approve_and_promote"]

    @admin.display(description="Challenger")
    def challenger_version(self, obj: Retraining) -> str:
        return f"v{obj.challenger.version}" if obj.challenger else "—"

    @admin.display(description="Page")
    def page_link(self, obj: Retraining) -> SafeString:
        url = reverse("training:retraining", args=[obj.registered_model.name]) + f"#retraining-{obj.pk}"
        return format_html('<a href="{}">Open the retraining page</a>', url)

    @admin.action(description="Approve and promote")
    def approve_and_promote(
        self, request: HttpRequest, queryset: QuerySet[Retraining]
    ) -> HttpResponse | None:
        retrainings = list(
            queryset.select_related("registered_model", "champion", "challenger").order_by("pk")
        )
        if "apply" not in request.POST:
            return production_confirmation(
                self,
                request,
                title="Approve and promote: confirm",
                intro="Each challenger below replaces its model's production version. The quality gate "
                "still applies: a challenger that misses it is held back, not promoted.",
                rows=[preview_row(lambda r=r: _approval_preview(r)) for r in retrainings],
                ids=[r.pk for r in retrainings],
                action_name="approve_and_promote",
                submit="Yes, approve and promote",
            )
        for retraining in retrainings:
            try:
                decision_services.retraining_approve(retraining=retraining, user=request.user)
            except ValidationError as exc:
                self.message_user(request, " ".join(exc.messages), messages.ERROR)
            else:
                self.message_user(
                    request,
                    f"Retraining {retraining.pk}: {retraining.challenger} promoted to production.",
                    messages.SUCCESS,
                )
        return None


def _approval_preview(retraining: Retraining) -> Any:
    """What approving would change in production, or a ValidationError saying why it cannot be approved."""
    if retraining.decision != Retraining.Decision.AWAITING_APPROVAL:
        raise ValidationError(
            f"Retraining {retraining.pk} is not awaiting approval "
            f"({retraining.get_decision_display().lower()})."
        )
    if retraining.challenger is None:
        raise ValidationError(f"Retraining {retraining.pk} has no challenger.")
    return transition_services.transition_preview(
        model_version=retraining.challenger, to_stage=Stage.PRODUCTION
    )


@admin.register(RetrainingEvent)
class RetrainingEventAdmin(ReadOnlyAdmin):
    list_display = ["created_at", "registered_model", "kind", "retraining_id", "message"]
    list_select_related = ["registered_model"]
    list_filter = ["kind", "registered_model"]
    search_fields = ["message", "registered_model__name"]
    fields = ["created_at", "registered_model", "retraining", "kind", "message", "figures"]
    readonly_fields = fields


@admin.action(description="Retrain now")
def retrain_now(
    modeladmin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet[RegisteredModel]
) -> None:
    """One retraining per selected model, each refused or started on its own."""
    for registered in queryset.order_by("name"):
        try:
            retraining = retraining_services.retraining_start(
                registered_model=registered,
                trigger=Retraining.Trigger.MANUAL,
                reason=f"Started by {request.user.get_username()} from the admin.",
                user=request.user,
            )
        except ValidationError as exc:
            modeladmin.message_user(request, f"{registered.name}: {' '.join(exc.messages)}", messages.ERROR)
        else:
            url = reverse("training:retraining", args=[registered.name]) + f"#retraining-{retraining.pk}"
            modeladmin.message_user(
                request,
                format_html(
                    '{}: <a href="{}">retraining {}</a> started.', registered.name, url, retraining.pk
                ),
            )


# The loop depends on the registry, not the other way round (an import contract): the action joins the
# registered-model admin that models_registry registered (INSTALLED_APPS lists it before training).
_registered_model_admin = admin.site.get_model_admin(RegisteredModel)
_registered_model_admin.actions = [*(_registered_model_admin.actions or []), retrain_now]
