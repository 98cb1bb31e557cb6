"""Django admin for registered models; versions' admin is version_admin (imported here, which registers it),
transitions' is transition_admin, webhooks' webhook_admin. Changes go through services."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import Count, OuterRef, QuerySet, Subquery
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.template.response import TemplateResponse

from mlops_site import errors
from mlops_site.admin import ReadOnlyInline

# version_admin registers ModelVersionAdmin when imported: Django imports only this module of the app.
from models_registry import challenger_services, services, version_admin
from models_registry.models import (
    HIGHER_IS_BETTER,
    TASK_METRICS,
    ModelVersion,
    RegisteredModel,
    Stage,
    min_metrics_plain,
)
from models_registry.triton import deployment
from models_registry.webhook_admin import WebhookInline, WebhookSecretsAdminMixin


class ModelVersionInline(ReadOnlyInline):
    model = ModelVersion
    fk_name = "registered_model"
    fields = [
        "version",
        "stage",
        "source",
        "algorithm",
        "metric_summary",
        "onnx_status",
        "created_by",
        "created_at",
    ]
    readonly_fields = fields
    show_change_link = True
    ordering = ["-version"]

    @admin.display(description="Metrics")
    def metric_summary(self, obj: ModelVersion) -> str:
        return version_admin.metric_summary(obj.metrics)


CHALLENGER_FIELDS = ["challenger_mode", "canary_percent"]
# Read-only here: the admin actions change serve_with_triton through the service, which syncs Triton.
TRITON_FIELDS = ["serve_with_triton", "triton_version", "triton_synced_at", "triton_error"]
DELETION = ["deletion"]


def _gate_help() -> str:
    """What the thresholds field takes, written from the metric table so it cannot drift from it."""
    tasks = "; ".join(
        f"{task}: "
        + ", ".join(
            f"{metric} ({'minimum' if direction == HIGHER_IS_BETTER else 'maximum'})"
            for metric, direction in metrics.items()
        )
        for task, metrics in TASK_METRICS.items()
    )
    return (
        "Quality gate for production: a JSON object of metric and threshold, for example "
        '{"accuracy": 0.8, "log_loss": 0.5} for classification or {"rmse": 3.0, "r2": 0.7} for regression. '
        "A score must reach its threshold (a minimum); an error metric must stay at or below it (a maximum). "
        f'Metrics: {tasks}. The API\'s form {{"accuracy": {{"min": 0.8}}}} is accepted too. '
        "Empty ({}) means no gate."
    )


class RegisteredModelAdminForm(forms.ModelForm):
    class Meta:
        model = RegisteredModel
        fields = ["name", "description", "task", "target_column", "min_metrics", *CHALLENGER_FIELDS]
        help_texts = {
            "min_metrics": _gate_help(),
            "challenger_mode": "How the newest staging version (the challenger) meets production traffic: "
            "shadow scores every production prediction on a worker, never answering; canary answers the "
            "share below, sticky by the client's key (or user).",
            "canary_percent": "Share of production traffic (0 to 100) the canary answers; 0 rolls it back.",
        }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Left out of a post (a script that edits the description), they keep their values.
        for name in CHALLENGER_FIELDS:
            if name in self.fields:
                self.fields[name].required = False
        # Shown as the help describes it, plain numbers; stored with each metric's direction.
        if self.instance.pk and "min_metrics" in self.fields:
            self.initial["min_metrics"] = min_metrics_plain(self.instance.min_metrics)

    def clean_challenger_mode(self) -> str:
        return self.cleaned_data.get("challenger_mode") or self.instance.challenger_mode

    def clean_canary_percent(self) -> int:
        percent = self.cleaned_data.get("canary_percent")
        return self.instance.canary_percent if percent is None else percent

    def clean(self) -> dict:
        cleaned = super().clean()
        if self.instance.pk is None or not set(CHALLENGER_FIELDS) & set(self.changed_data):
            return cleaned
        try:
            challenger_services.challenger_mode_check(
                registered_model=self.instance,
                mode=cleaned.get("challenger_mode"),
                canary_percent=cleaned.get("canary_percent"),
            )
        except ValidationError as exc:
            for name, messages_of in exc.message_dict.items():
                self.add_error("challenger_mode" if name == "mode" else name, messages_of)
        except challenger_services.ChallengerUnavailable as exc:
            self.add_error("challenger_mode", exc.detail)
        return cleaned


@admin.register(RegisteredModel)
class RegisteredModelAdmin(WebhookSecretsAdminMixin, admin.ModelAdmin):
    form = RegisteredModelAdminForm
    list_display = [
        "name",
        "task",
        "target_column",
        "version_count",
        "production",
        "challenger_mode",
        "serve_with_triton",
        "created_by",
        "created_at",
    ]
    list_filter = ["serve_with_triton"]
    list_select_related = ["created_by"]
    search_fields = ["name", "description"]
    inlines = [ModelVersionInline, WebhookInline]

    def get_queryset(self, request: HttpRequest) -> QuerySet[RegisteredModel]:
        production = ModelVersion.objects.filter(registered_model=OuterRef("pk"), stage=Stage.PRODUCTION)
        return (
            super()
            .get_queryset(request)
            .annotate(
                version_total=Count("versions"), production_version=Subquery(production.values("version")[:1])
            )
        )

    actions = ["delete_without_versions", "triton_serve", "triton_stop"]

    def has_delete_permission(self, request: HttpRequest, obj: RegisteredModel | None = None) -> bool:
        # Only a model without versions: they are the record of what was trained and served.
        if not super().has_delete_permission(request, obj):
            return False
        return obj is None or not obj.versions.exists()

    def get_actions(self, request: HttpRequest) -> dict[str, Any]:
        # Django's own bulk delete would refuse a model with versions as a missing permission.
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)
        return actions

    def get_readonly_fields(self, request: HttpRequest, obj: RegisteredModel | None = None) -> list[str]:
        # The name is MLflow's registered model name; task and target are fixed by the first version.
        return (
            [
                "name",
                "task",
                "target_column",
                "challenger_since",
                *TRITON_FIELDS,
                "created_by",
                "created_at",
                *DELETION,
            ]
            if obj
            else []
        )

    def get_fields(self, request: HttpRequest, obj: RegisteredModel | None = None) -> list[str]:
        fields = ["name", "description", "task", "target_column", "min_metrics"]
        # A new model has no versions yet, so no challenger either.
        return (
            [
                *fields,
                *CHALLENGER_FIELDS,
                "challenger_since",
                *TRITON_FIELDS,
                "created_by",
                "created_at",
                *DELETION,
            ]
            if obj
            else fields
        )

    @admin.display(description="Deletion")
    def deletion(self, obj: RegisteredModel) -> str:
        try:
            services.registered_model_delete_check(registered_model=obj)
        except errors.Conflict as exc:
            return exc.detail
        return "It has no versions, so it can be deleted (with its webhooks and retraining settings)."

    def delete_view(
        self, request: HttpRequest, object_id: str, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        """Our confirmation page, which says why a model cannot be deleted, and then the service."""
        if not super().has_delete_permission(request):
            raise PermissionDenied
        obj = self.get_object(request, unquote(object_id))
        if obj is None:
            return self._get_obj_does_not_exist_redirect(request, self.opts, object_id)
        return self._delete_confirmation(request, [obj], action_name=None)

    @admin.action(description="Delete selected models that have no versions", permissions=["delete"])
    @admin.action(description="Serve the production version with Triton")
    def triton_serve(self, request: HttpRequest, queryset: QuerySet[RegisteredModel]) -> None:
        self._triton_set(request, queryset, enabled=True)

    @admin.action(description="Stop serving with Triton")
    def triton_stop(self, request: HttpRequest, queryset: QuerySet[RegisteredModel]) -> None:
        self._triton_set(request, queryset, enabled=False)

    def _triton_set(
        self, request: HttpRequest, queryset: QuerySet[RegisteredModel], *, enabled: bool
    ) -> None:
        # Through the service, one model at a time: Triton follows each once it commits.
        names = []
        for registered in queryset.order_by("name"):
            deployment.triton_serving_set(registered_model=registered, enabled=enabled)
            names.append(registered.name)
        verb = "Triton serves the production version of" if enabled else "Triton stops serving"
        self.message_user(request, f"{verb} {', '.join(names)} once synced (see each model's Triton page).")

    def delete_without_versions(
        self, request: HttpRequest, queryset: QuerySet[RegisteredModel]
    ) -> HttpResponse | None:
        return self._delete_confirmation(
            request, list(queryset.order_by("name")), action_name="delete_without_versions"
        )

    def _delete_confirmation(
        self, request: HttpRequest, models: list[RegisteredModel], *, action_name: str | None
    ) -> HttpResponse | None:
        if request.method == "POST" and "apply" in request.POST:
            for registered in models:
                try:
                    services.registered_model_delete(registered_model=registered, user=request.user)
                except errors.Conflict as exc:
                    self.message_user(request, exc.detail, messages.ERROR)
                else:
                    self.log_deletions(request, [registered])
                    self.message_user(request, f"Model {registered.name} deleted.", messages.SUCCESS)
            return (
                redirect("admin:models_registry_registeredmodel_changelist") if action_name is None else None
            )
        rows = []
        for registered in models:
            try:
                services.registered_model_delete_check(registered_model=registered)
            except errors.Conflict as exc:
                rows.append({"model": registered, "refusal": exc.detail})
            else:
                rows.append({"model": registered, "refusal": "", "webhooks": registered.webhooks.count()})
        deletable = [row for row in rows if not row["refusal"]]
        return TemplateResponse(
            request,
            "admin/models_registry/registeredmodel/delete.html",
            {
                **self.admin_site.each_context(request),
                "title": "Delete registered models" if action_name else f"Delete {models[0].name}",
                "opts": self.model._meta,
                "rows": rows,
                "deletable": deletable,
                "action_name": action_name,
                "action_checkbox_name": admin.helpers.ACTION_CHECKBOX_NAME,
            },
            status=200 if deletable else 409,
        )

    def save_model(
        self, request: HttpRequest, obj: RegisteredModel, form: forms.ModelForm, change: bool
    ) -> None:
        if not change:
            created = services.registered_model_create(
                name=obj.name,
                created_by=request.user,
                task=obj.task,
                target_column=obj.target_column,
                description=obj.description,
                min_metrics=obj.min_metrics,
            )
            # The admin goes on with `obj` (inlines, log entry): make it the row the service created.
            obj.pk, obj.created_at, obj.created_by = created.pk, created.created_at, created.created_by
            obj._state.adding = False
            obj._state.db = created._state.db
            return
        services.registered_model_thresholds_set(registered_model=obj, min_metrics=obj.min_metrics)
        if "description" in form.changed_data:
            obj.save(update_fields=["description"])
        if set(CHALLENGER_FIELDS) & set(form.changed_data):
            challenger_services.challenger_mode_set(
                registered_model=obj,
                mode=obj.challenger_mode,
                canary_percent=obj.canary_percent,
                user=request.user,
            )

    @admin.display(description="Versions", ordering="version_total")
    def version_count(self, obj: RegisteredModel) -> int:
        return obj.version_total

    @admin.display(description="Production", ordering="production_version")
    def production(self, obj: RegisteredModel) -> str:
        return f"v{obj.production_version}" if obj.production_version else "—"
